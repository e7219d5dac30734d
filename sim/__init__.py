"""The SimPy runtime: virtual time, a broker model, fakeredis and a fake hypervisor."""
