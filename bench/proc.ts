/**
 * Process CPU time from /proc and small OS helpers (machine description, CPU pinning, free ports).
 *
 * CPU time of a process = utime + stime of /proc/<pid>/stat: every thread of the process (the
 * JavaScript thread, V8's GC and compiler helper threads, libuv's pool), user and kernel mode, in
 * clock ticks (CLK_TCK, 100 on Linux: 10 ms). Reading it needs nothing from the measured process.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';

let clockTicks: number | undefined;

/** Clock ticks per second of /proc's utime/stime. */
export function clockTicksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** CPU time (user + system, all threads) of a process so far, in milliseconds. */
export function processCpuMs(pid: number, ticksPerSecond: number = clockTicksPerSecond()): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  // The command name (field 2) is in parentheses and may contain spaces: split after it.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state); utime is field 14, stime field 15.
  const ticks = Number(fields[11]) + Number(fields[12]);
  return (ticks * 1000) / ticksPerSecond;
}

/** Whole-machine CPU time from /proc/stat, in ms: busy (user+nice+system+irq+softirq+steal) and steal. */
export function machineCpuMs(ticksPerSecond: number = clockTicksPerSecond()): { busy: number; steal: number } {
  const line = readFileSync('/proc/stat', 'latin1').split('\n', 1)[0]!;
  const [user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number) as number[];
  const toMs = (ticks: number) => (ticks * 1000) / ticksPerSecond;
  return { busy: toMs(user! + nice! + system! + irq! + softirq! + steal!), steal: toMs(steal!) };
}

export function hasProcCpu(): boolean {
  try {
    processCpuMs(process.pid);
    return true;
  } catch {
    return false;
  }
}

export interface Machine {
  cpuModel: string;
  cores: number;
  memoryGiB: number;
  node: string;
  v8: string;
  os: string;
  clockTicks: number;
}

export function describeMachine(): Machine {
  const cpus = os.cpus();
  let cpuModel = cpus[0]?.model?.trim() || 'unknown';
  try {
    const info = readFileSync('/proc/cpuinfo', 'utf8');
    const mhz = /^cpu MHz\s*:\s*([\d.]+)/m.exec(info)?.[1];
    if (mhz) cpuModel += ` @ ${Math.round(Number(mhz))} MHz`;
  } catch {
    // not Linux
  }
  return {
    cpuModel,
    cores: os.availableParallelism(),
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    v8: process.versions.v8,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    clockTicks: clockTicksPerSecond(),
  };
}

/** True when `taskset` exists and can pin. */
export function canPin(): boolean {
  const result = spawnSync('taskset', ['-pc', String(process.pid)], { encoding: 'utf8' });
  return result.status === 0;
}

/** Pins every thread of a running process to `cpus` (e.g. "0"). */
export function pinProcess(pid: number, cpus: string): boolean {
  return spawnSync('taskset', ['-a', '-pc', cpus, String(pid)], { stdio: 'ignore' }).status === 0;
}

/** A port that was free a moment ago (bind to 0, read, close). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}
