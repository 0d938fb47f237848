"""What every process of a node shares: runtime, supervision's state machine, sd_notify."""
