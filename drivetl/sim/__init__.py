"""drivetl.sim."""
