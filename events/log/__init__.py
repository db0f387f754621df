"""The Kafka event log, the low layer every runtime package shares: topic names and the
aggregate-id -> partition mapping, message positions, the reading and transaction helpers, and the
dead-letter codec. It knows no domain and no Ray; domain code never imports it."""
