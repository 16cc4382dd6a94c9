"""The contracts every layer shares, with no torch-heavy imports: the data schema (``schema``), the batch contract
(``batch``), the nuisance features (``nuisance``) and the registries' names (``registry``)."""
