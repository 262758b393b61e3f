"""Developer tooling: the local Kafka broker and schema registry used by tests, demo and CI."""
