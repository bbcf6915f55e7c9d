"""What every torch-based service shares about compute: device and dtype selection, CPU threads,
out-of-memory handling, opt-in ``torch.compile``."""
