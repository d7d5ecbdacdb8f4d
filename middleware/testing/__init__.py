"""Test kits that stand outside the runtime: the shared adapter contract suite (`adapter_contract`)."""
