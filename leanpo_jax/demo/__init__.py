"""The embedded end-to-end demo: SFT -> self-generated pairs -> DPO / SimPO / LeanPO."""
