"""Tested plumbing for the snowflake notebooks.

The notebooks keep the teaching steps; this package keeps what is hard to get right but teaches
little. Import modules by name, e.g. ``from snowflake_tools import search``.

Modules:
    files     -- atomic writes, safe file names, the image manifest, the notebooks' folders
    polite    -- polite, bounded HTTP: robots.txt, delays, redirects, caps, deadlines
    scrape    -- crawling the gallery and keeping its photos (notebook 01)
    demo      -- synthetic snow crystals for offline runs (notebook 01)
    images    -- listing and robust loading of images, the pad/resize geometry (nb 02, 05)
    features  -- the weights, VGG16 cut at a layer, feature extraction with a cache (nb 02)
    search    -- nearest distinct neighbours and k-NN scores with FAISS (notebooks 02, 03)
    fidelity  -- the ranking in one call, and the close calls that decide whether bfloat16
                 features are precise enough (notebooks 02-04)
    plots     -- every figure: montages, results, the atlas, the certificate, cell maps
    atlas     -- the t-SNE layout of every flake for the atlas (notebook 02)
    report    -- the self-contained report.html (notebook 02) and why/report.html (nb 05)
    pooling   -- compact features: global average pooling or the flattened map (notebook 04)
    ray_extract -- extraction on Ray Data into Parquet shards, on a laptop or a cluster (nb 04)
    ray_watchdog -- ends a local Ray with the kernel that started it, even a killed one (nb 04)
    ann       -- FAISS index chosen by size, k-NN scores, the certified exact top-N (nb 04)
    runinfo   -- demo status, peak memory and run.json
    robustness -- copies, self-retrieval, pooled features and agreement (notebook 03)
    why       -- cell maps of a distance, patch novelty, the most different set (notebook 05)
"""
