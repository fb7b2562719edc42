"""The quantized artifact's rules, in one leaf package that imports nothing else of kvant's: scheme registry
(`schemes`), manifest (`manifest`), target matcher (`targets`), recovery gate (`gate`), model card (`card`) and the
user-facing error type (`errors`). quantize writes artifacts through it; engine, eval and tui read them through it."""
