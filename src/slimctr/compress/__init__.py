"""Post-training compression of embedding tables (dimension-search spec 7).

``codecs``  how one table is stored: fp16, bf16, fp8, int8, binary, PCA, PCA + a codec
``table``   ``CompressedTable``: a table kept compressed in memory, decoded row by row
``dense``   ``Int8Linear``: a dense layer's weight kept int8 with a scale per output row
``model``   ``compress_model`` and ``compress``: a trained model or run with its tables compressed

Nothing is imported here: ``slimctr.nn.embedding`` imports ``table``, and ``model`` imports the
field embedding.
"""
