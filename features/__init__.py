"""Point-in-time customer features and labels, declared once and compiled to SQL."""
