"""The EC2 Query API (2010-08-31): request in, workflow run, XML out. Pure.

Modules: ``request`` (parameters, signatures, time), ``params`` (each action's
parameters), ``api`` (``Ec2Api``: the handlers), ``render`` (XML), ``errors`` (EC2
codes and statuses), ``inprocess`` (requests made in this process).
"""

from common.ec2.api import Ec2Api
from common.ec2.params import ACTIONS
from common.ec2.request import HttpRequest, HttpResponse

__all__ = ["ACTIONS", "Ec2Api", "HttpRequest", "HttpResponse"]
