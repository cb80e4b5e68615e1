#!/usr/bin/env bash
# Session 16's series: session 14's (series14.sh) with its raw outputs in
# docs/perf/session16/. Copy this file and series14.sh to tmp/ and run this
# one from there (series14.sh works from the directory above its own).
P=docs/perf/session16 exec bash "$(dirname "$0")/series14.sh"
