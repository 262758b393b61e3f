"""Button commerce consumer: Kafka commerce events in, Button Order API calls out."""

__version__ = "0.1.0"
