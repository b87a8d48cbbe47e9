"""How the pieces run: the local Kafka + PostgreSQL stack, Kafka's pom, docker-compose.

Nothing here knows about events or tables; it only starts, stops and finds servers.
"""

from assetlog.compose.processes import StackError
from assetlog.compose.stack import LocalStack, shell_exports

__all__ = ["LocalStack", "StackError", "shell_exports"]
