"""Prefect orchestration of ATM dataruns (thin: every task body is one call into atm_core)."""
