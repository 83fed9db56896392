"""The PyQt6 desktop app: review footage, label, add fault types, scan in the background."""
