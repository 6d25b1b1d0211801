"""The SQLite catalog: connections with the appliance's pragmas, transactions, migrations."""

from appliance.db.connection import ConnectionPool, Database, open_database, write_transaction
from appliance.db.migrations import migrate

__all__ = ["ConnectionPool", "Database", "migrate", "open_database", "write_transaction"]
