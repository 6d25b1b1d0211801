"""Health, system facts (doctor) and talking to systemd."""
