"""The SimPy runtime: virtual time, a broker model, fakeredis, a mock LDAP directory and fake drivers."""
