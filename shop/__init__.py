"""The reference app: an online shop's order saga across four services (order, inventory,
payment, shipping), written only against Choreo's public API and declared in cluster.yaml."""
