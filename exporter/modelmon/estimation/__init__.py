"""Label-free monitoring from the reference: confidence-based performance
estimation (:mod:`.cbpe`, with :mod:`.calibration`) and the sections of the
reference profile that hold the fitted estimators (:mod:`.sections`)."""
