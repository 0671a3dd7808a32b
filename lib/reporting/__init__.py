"""What a person reads: plots (PNG and DVC plot data) and the self-contained HTML tear sheet.
May import every package above it and the plumbing.
"""
