#!/usr/bin/env bash
# Install the Debian packages that tests/test_slurm.py needs for its single-node SLURM
# (slurmctld + slurmd + slurmdbd/MariaDB + munge). Idempotent: returns at once when every
# binary is already there. Needs root; as another user it only says so and exits 0, and the
# SLURM test then skips itself.
#   usage: tests/slurm_install.sh        (CI: called from .ci/run before `make test`)
set -euo pipefail

# The binaries tests/slurm_cluster.py runs (BINARIES there).
needed=(slurmctld slurmd slurmdbd sbatch sacct sacctmgr scontrol sinfo squeue scancel srun
        munged munge unmunge mungekey mariadbd mariadb-install-db mariadb)
missing=()
for bin in "${needed[@]}"; do
    PATH="$PATH:/usr/sbin:/sbin" command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "slurm_install: SLURM, munge and MariaDB already installed"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "slurm_install: not root, skipping (missing: ${missing[*]}); the SLURM test will be skipped"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "slurm_install: no apt-get (not Debian/Ubuntu), skipping; the SLURM test will be skipped"
    exit 0
fi
echo "slurm_install: installing (missing: ${missing[*]})"
export DEBIAN_FRONTEND=noninteractive
# Do not let the packages' maintainer scripts start daemons (no systemd here; the test starts its own).
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    created_policy=1
fi
trap '[ "$created_policy" = 1 ] && rm -f "$policy"' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client slurmdbd munge mariadb-server >/dev/null
echo "slurm_install: done"
