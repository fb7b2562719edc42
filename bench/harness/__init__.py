"""kvant.bench: what `kvant bench` runs beside the engine: seeded workloads, the card's ceilings and roofline,
the transformers peer, and the serving load generator. The scripts in bench/ around this folder are not installed."""
