"""`georeason batch`: tiled inference over scene catalogues on Ray, resumable, with region-wide outputs.

Paper Sec. 4's tiled inference (one description embedding p per scene and question) spread over an actor
pool; docs/batch.md. Modules: inputs (catalogues), manifest (run folder), workers (actors, scheduler),
mosaic (region layer, VRT), cli (the command). Ray is imported only when a run starts.
"""
