"""The real runtime (RabbitMQ, Redis, libvirt, Linux networking): not built yet."""
