"""What each corpus's license says, for model cards: a model trained on a corpus carries
its terms (RAVDESS is share-alike: models derived from it inherit CC BY-NC-SA)."""

LICENSES = {
    "ravdess": "CC BY-NC-SA 4.0 (Livingstone & Russo 2018, Zenodo 1188976); share-alike, non-commercial",
    "emodb": "free for research (Burkhardt et al. 2005); republished by audEERING as CC0-1.0",
    "tess": "CC BY-NC-ND 4.0 (Dupuis & Pichora-Fuller, University of Toronto)",
    "cremad": "Open Database License 1.0 (Cao et al. 2014)",
    "savee": "free for research (Haq & Jackson, University of Surrey)",
    "emovo": "non-commercial research use, with acknowledgment (Costantini et al., LREC 2014)",
    "nemo": "CC BY-NC-SA 4.0 (Christop, LREC-COLING 2024); share-alike, non-commercial",
    "ased": "research use; cite Retta et al., ACM TALLIP 2022 (ASED v1 README)",
    # The corpus's README and its LICENSE file disagree; the card states the stricter reading.
    "turev": "CC BY-NC-ND 4.0 by its README (its LICENSE file says GPL-3.0; the stricter, no-derivatives "
             "reading is assumed) (Canpolat et al. 2020)",
    "korean": "research only, non-commercial (public 5 % sample of the KAIST/SELVAS AI emotional speech corpus)",
    "folder": "the user's own data: its owner's terms",
    "csv": "the user's own data: its owner's terms",
}
