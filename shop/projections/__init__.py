"""The shop's read side: ClickHouse projections of orders, lines, customers, sagas, sales and stock."""
