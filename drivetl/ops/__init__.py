"""drivetl.ops."""
