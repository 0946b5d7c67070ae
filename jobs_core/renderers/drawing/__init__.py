"""The embedded renderer's drawing engine: massing model, camera, sheet and the four views.

Pure Pillow + math, no I/O: a view turns a ConceptInputs into draw operations on a Sheet.
"""
