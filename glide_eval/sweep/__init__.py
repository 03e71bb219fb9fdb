"""The sweep: sample a grid of guidance settings and measure each one.

config       TOML -> typed, validated `SweepConfig` (and its `Setting`s)
plan         settings -> shards of sample indices; model evaluations per setting
components   what an engine gives a sweep: generate, featurize, compute_metrics, compute_differences
engines      the glide / toy / python:MODULE:FACTORY engines as `Components`
references   reference statistics: the sweep's cache, or the user's file used as given
preflight    open every file the config names before sampling (`sweep --check`)
captions     the captions to sample (file, MS-COCO, toy world)
rundir       the run directory as a sweep sees it: shard keys, finished records, config checks
             (its files, names and checked readers/writers: `storage.rundir`)
distributed  torchrun ranks and barriers
run          sample the unfinished shards (`run_sweep`)
merge        check every shard, compute metrics, write results
differences  paired differences between settings (RUN_DIR/differences.csv)
describe     the dry-run plan
"""
