"""Clip filters (Summer-22B section 3.6): scores computed on a clip's downscaled frames, one module
per measurement. The stages in curator/stages/filter_*.py run them; curator/filters/verdict.py turns
stored scores into pass/fail with the thresholds of `curate.filters`, so a threshold change never
decodes video again."""
