"""SAMPLE CRM and ERP for the demo and tests (not real systems)."""
