//! Integration tests against the private RabbitMQ node (not yet written).
