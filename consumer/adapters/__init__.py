"""One module per technology: Kafka, Avro, Button HTTP, metrics, admin HTTP, logging."""
