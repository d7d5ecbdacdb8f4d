"""Deployment assets; `deploy.demo` holds the SAMPLE systems of the demo."""
