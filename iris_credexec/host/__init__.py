"""The host side: a broker on the VM that mints per-task tokens a task cannot forge.

Runs outside the containers, as root. Shares only errors, audit and token code with the
executable; nothing here is imported in executable mode.
"""
