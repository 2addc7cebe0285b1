"""The gateway: REST, SSE and the pages. Stateless but for its read model, which it builds
from the event streams and can drop and rebuild at any time."""
