"""The real runtime: the same managers against RabbitMQ, Redis, OpenLDAP, libvirt and Linux networking."""
