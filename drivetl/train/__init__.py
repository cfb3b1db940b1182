"""drivetl.train."""
