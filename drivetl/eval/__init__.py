"""drivetl.eval."""
