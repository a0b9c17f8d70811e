"""A fake Klipper for the extras' tests: reactor, gcode, print_stats,
virtual_sdcard and pause_resume modelled per supported Klipper version."""
