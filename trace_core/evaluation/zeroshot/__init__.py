"""The zero-shot suite of the paper: 13 columns on 10 unseen datasets (one loader module per dataset)."""
