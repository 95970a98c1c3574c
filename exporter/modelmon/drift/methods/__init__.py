"""One module per drift method; importing this package registers them all.

========  ==============  ===========  =========  ===========
method    feature types   threshold    p-value    raw values
========  ==============  ===========  =========  ===========
ks        numerical       p < 0.05     yes        yes
wasserst. numerical       >= 0.1       no         yes
psi       both            >= 0.1       no         no (counts)
jensensh. both            >= 0.1       no         no (counts)
chisquare categorical     p < 0.05     yes        no (counts)
meanstd   numerical       > 0.1        no         yes
========  ==============  ===========  =========  ===========
"""

from . import chisquare, jensenshannon, ks, meanstd, psi, wasserstein  # noqa: F401
