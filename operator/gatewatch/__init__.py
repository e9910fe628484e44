"""gatewatch: Elastic KQL detection rules enforced at Kubernetes admission."""

__version__ = "0.1.0"
