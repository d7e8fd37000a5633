#!/bin/sh
#SBATCH --job-name=ocean_solver
#SBATCH --partition=compute
#SBATCH --account=ocean-2025
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=8
#SBATCH --cpus-per-task=4
#SBATCH --time=26:00:00
#SBATCH --mem=64G
#SBATCH --output=/tmp/actogrid-jobs/logs/solver-%j.out
#SBATCH --error=/scratch/ocean/logs/solver-%j.err
#SBATCH --exclusive
#SBATCH --constraint=ib
cd /tmp/actogrid-jobs || exit 1
# 32 runtime(s): one srun task per slot; one that fails does not stop the others
/opt/slurm/bin/srun --kill-on-bad-exit=0 --nodes=4 --ntasks=32 --ntasks-per-node=8 --cpus-per-task=4 env OCEAN_SCRATCH=/scratch/ocean 'ACTOGRID_TOKEN=s3cr3t value' RUST_LOG=info /opt/app/bin/app node --deployer 10.0.0.1:7000 &
wait $!
