"""What each corpus's license says, for model cards: a model trained on a corpus carries
its terms (RAVDESS is share-alike: models derived from it inherit CC BY-NC-SA)."""

LICENSES = {
    "ravdess": "CC BY-NC-SA 4.0 (Livingstone & Russo 2018, Zenodo 1188976); share-alike, non-commercial",
    "emodb": "free for research (Burkhardt et al. 2005); republished by audEERING as CC0-1.0",
    "tess": "CC BY-NC-ND 4.0 (Dupuis & Pichora-Fuller, University of Toronto)",
    "cremad": "Open Database License 1.0 (Cao et al. 2014)",
    "savee": "free for research (Haq & Jackson, University of Surrey)",
    "folder": "the user's own data: its owner's terms",
    "csv": "the user's own data: its owner's terms",
}
