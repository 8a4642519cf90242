//! `/v1/agent/host`: the host's memory, CPUs, identity and root disk, in the shape Consul
//! answers (gopsutil's JSON field names), read from `/proc`, `/etc/os-release` and one
//! `statvfs("/")`. A part that cannot be read is `null` and its error is listed in `Errors`.

use serde::Serialize;
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// Consul's `debug.HostInfo`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostInfo {
    pub memory: Option<Memory>,
    #[serde(rename = "CPU")]
    pub cpu: Option<Vec<Cpu>>,
    pub host: Option<Host>,
    pub disk: Option<Disk>,
    pub collection_time: i64,
    pub errors: Option<Vec<String>>,
}

/// gopsutil's `mem.VirtualMemoryStat` (bytes).
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Memory {
    total: u64,
    available: u64,
    used: u64,
    used_percent: f64,
    free: u64,
    active: u64,
    inactive: u64,
    wired: u64,
    laundry: u64,
    buffers: u64,
    cached: u64,
    write_back: u64,
    dirty: u64,
    write_back_tmp: u64,
    shared: u64,
    slab: u64,
    sreclaimable: u64,
    sunreclaim: u64,
    page_tables: u64,
    swap_cached: u64,
    commit_limit: u64,
    #[serde(rename = "committedAS")]
    committed_as: u64,
    high_total: u64,
    high_free: u64,
    low_total: u64,
    low_free: u64,
    swap_total: u64,
    swap_free: u64,
    mapped: u64,
    vmalloc_total: u64,
    vmalloc_used: u64,
    vmalloc_chunk: u64,
    huge_pages_total: u64,
    huge_pages_free: u64,
    huge_pages_rsvd: u64,
    huge_pages_surp: u64,
    huge_page_size: u64,
    anon_huge_pages: u64,
}

/// gopsutil's `cpu.InfoStat`, one per logical CPU.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Cpu {
    cpu: i32,
    vendor_id: String,
    family: String,
    model: String,
    stepping: i32,
    physical_id: String,
    core_id: String,
    cores: i32,
    model_name: String,
    mhz: f64,
    cache_size: i32,
    flags: Vec<String>,
    microcode: String,
}

/// gopsutil's `host.InfoStat`.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Host {
    hostname: String,
    uptime: u64,
    boot_time: u64,
    procs: u64,
    os: String,
    platform: String,
    platform_family: String,
    platform_version: String,
    kernel_version: String,
    kernel_arch: String,
    virtualization_system: String,
    virtualization_role: String,
    host_id: String,
}

/// gopsutil's `disk.UsageStat` of `/`.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Disk {
    path: String,
    fstype: String,
    total: u64,
    free: u64,
    used: u64,
    used_percent: f64,
    inodes_total: u64,
    inodes_used: u64,
    inodes_free: u64,
    inodes_used_percent: f64,
}

/// Collects everything; a few small file reads and one `statvfs`.
pub fn collect() -> HostInfo {
    let mut errors = Vec::new();
    let memory = keep(&mut errors, "memory", memory());
    let cpu = keep(&mut errors, "cpu", cpus());
    let host = keep(&mut errors, "host", host());
    let disk = keep(&mut errors, "disk", disk("/"));
    let collection_time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    HostInfo {
        memory,
        cpu,
        host,
        disk,
        collection_time,
        errors: (!errors.is_empty()).then_some(errors),
    }
}

/// The value, or `None` with the error noted.
fn keep<T>(errors: &mut Vec<String>, what: &str, result: Result<T, String>) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            errors.push(format!("{what}: {e}"));
            None
        }
    }
}

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64 * 100.0
    }
}

fn memory() -> Result<Memory, String> {
    Ok(parse_meminfo(&read("/proc/meminfo")?))
}

/// `/proc/meminfo` as gopsutil reads it: kB values in bytes, `Cached` including reclaimable
/// slab, `Used` what is neither free, buffers nor cache.
fn parse_meminfo(text: &str) -> Memory {
    let values: HashMap<&str, u64> = text
        .lines()
        .filter_map(|line| {
            let (key, rest) = line.split_once(':')?;
            let mut parts = rest.split_whitespace();
            let n: u64 = parts.next()?.parse().ok()?;
            let scale = if parts.next() == Some("kB") { 1024 } else { 1 };
            Some((key.trim(), n.saturating_mul(scale)))
        })
        .collect();
    let get = |key: &str| values.get(key).copied().unwrap_or(0);
    let mut m = Memory {
        total: get("MemTotal"),
        free: get("MemFree"),
        buffers: get("Buffers"),
        cached: get("Cached") + get("SReclaimable"),
        active: get("Active"),
        inactive: get("Inactive"),
        write_back: get("Writeback"),
        dirty: get("Dirty"),
        write_back_tmp: get("WritebackTmp"),
        shared: get("Shmem"),
        slab: get("Slab"),
        sreclaimable: get("SReclaimable"),
        sunreclaim: get("SUnreclaim"),
        page_tables: get("PageTables"),
        swap_cached: get("SwapCached"),
        commit_limit: get("CommitLimit"),
        committed_as: get("Committed_AS"),
        high_total: get("HighTotal"),
        high_free: get("HighFree"),
        low_total: get("LowTotal"),
        low_free: get("LowFree"),
        swap_total: get("SwapTotal"),
        swap_free: get("SwapFree"),
        mapped: get("Mapped"),
        vmalloc_total: get("VmallocTotal"),
        vmalloc_used: get("VmallocUsed"),
        vmalloc_chunk: get("VmallocChunk"),
        huge_pages_total: get("HugePages_Total"),
        huge_pages_free: get("HugePages_Free"),
        huge_pages_rsvd: get("HugePages_Rsvd"),
        huge_pages_surp: get("HugePages_Surp"),
        huge_page_size: get("Hugepagesize"),
        anon_huge_pages: get("AnonHugePages"),
        ..Memory::default()
    };
    m.available = values
        .get("MemAvailable")
        .copied()
        .unwrap_or(m.free + m.buffers + m.cached);
    m.used = m
        .total
        .saturating_sub(m.free)
        .saturating_sub(m.buffers)
        .saturating_sub(m.cached);
    m.used_percent = percent(m.used, m.total);
    m
}

fn cpus() -> Result<Vec<Cpu>, String> {
    Ok(parse_cpuinfo(&read("/proc/cpuinfo")?))
}

/// `/proc/cpuinfo`: one block per logical CPU.
fn parse_cpuinfo(text: &str) -> Vec<Cpu> {
    text.split("\n\n")
        .filter(|block| block.contains("processor"))
        .map(|block| {
            let mut cpu = Cpu::default();
            for line in block.lines() {
                let Some((key, value)) = line.split_once(':') else {
                    continue;
                };
                let value = value.trim();
                match key.trim() {
                    "processor" => cpu.cpu = value.parse().unwrap_or(0),
                    "vendor_id" => cpu.vendor_id = value.to_owned(),
                    "cpu family" => cpu.family = value.to_owned(),
                    "model" => cpu.model = value.to_owned(),
                    "model name" => cpu.model_name = value.to_owned(),
                    "stepping" => cpu.stepping = value.parse().unwrap_or(0),
                    "physical id" => cpu.physical_id = value.to_owned(),
                    "core id" => cpu.core_id = value.to_owned(),
                    "cpu cores" => cpu.cores = value.parse().unwrap_or(0),
                    "cpu MHz" => cpu.mhz = value.parse().unwrap_or(0.0),
                    "cache size" => {
                        let kb = value.trim_end_matches("KB").trim();
                        cpu.cache_size = kb.parse().unwrap_or(0);
                    }
                    "flags" | "Features" => {
                        cpu.flags = value.split_whitespace().map(str::to_owned).collect();
                    }
                    "microcode" => cpu.microcode = value.to_owned(),
                    _ => {}
                }
            }
            cpu
        })
        .collect()
}

fn host() -> Result<Host, String> {
    let uptime = read("/proc/uptime")?
        .split_whitespace()
        .next()
        .and_then(|s| s.parse::<f64>().ok())
        .map_or(0, |s| s as u64);
    let boot_time = read("/proc/stat")?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let procs = std::fs::read_dir("/proc")
        .map_err(|e| format!("/proc: {e}"))?
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .count() as u64;
    let release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let os_field = |key: &str| {
        release
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim().trim_matches('"').to_owned())
            .unwrap_or_default()
    };
    let platform = os_field("ID");
    let family = os_field("ID_LIKE")
        .split_whitespace()
        .next()
        .map_or_else(|| platform.clone(), str::to_owned);
    let host_id = [
        "/sys/class/dmi/id/product_uuid",
        "/proc/sys/kernel/random/boot_id",
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    .map(|s| s.trim().to_lowercase())
    .unwrap_or_default();
    Ok(Host {
        hostname: read("/proc/sys/kernel/hostname")?.trim().to_owned(),
        uptime,
        boot_time,
        procs,
        os: std::env::consts::OS.to_owned(),
        platform,
        platform_family: family,
        platform_version: os_field("VERSION_ID"),
        kernel_version: read("/proc/sys/kernel/osrelease")?.trim().to_owned(),
        kernel_arch: std::env::consts::ARCH.to_owned(),
        virtualization_system: String::new(),
        virtualization_role: String::new(),
        host_id,
    })
}

fn disk(path: &str) -> Result<Disk, String> {
    let stat = rustix::fs::statvfs(path).map_err(|e| format!("statvfs {path}: {e}"))?;
    let block = stat.f_frsize;
    let total = stat.f_blocks * block;
    let free = stat.f_bavail * block;
    let used = (stat.f_blocks - stat.f_bfree) * block;
    let inodes_used = stat.f_files.saturating_sub(stat.f_ffree);
    // The file system type of the last mount on `path`, as /proc/mounts lists them.
    let fstype = std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .rev()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let (_dev, at, kind) = (f.next()?, f.next()?, f.next()?);
            (at == path).then(|| kind.to_owned())
        })
        .unwrap_or_default();
    Ok(Disk {
        path: path.to_owned(),
        fstype,
        total,
        free,
        used,
        used_percent: percent(used, used + free),
        inodes_total: stat.f_files,
        inodes_used,
        inodes_free: stat.f_ffree,
        inodes_used_percent: percent(inodes_used, stat.f_files),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_in_bytes_with_gopsutils_used() {
        let m = parse_meminfo(
            "MemTotal: 1000 kB\nMemFree: 200 kB\nMemAvailable: 600 kB\nBuffers: 100 kB\n\
             Cached: 250 kB\nSReclaimable: 50 kB\nHugePages_Total: 3\n",
        );
        assert_eq!(m.total, 1_024_000);
        assert_eq!(m.available, 600 * 1024);
        assert_eq!(m.cached, 300 * 1024);
        assert_eq!(m.used, 400 * 1024);
        assert!((m.used_percent - 40.0).abs() < 1e-9);
        assert_eq!(m.huge_pages_total, 3);
    }

    #[test]
    fn cpuinfo_one_entry_per_processor() {
        let cpus = parse_cpuinfo(
            "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon\ncpu MHz\t\t: 2299.998\n\
             cache size\t: 266240 KB\ncpu cores\t: 2\nflags\t\t: fpu sse\n\n\
             processor\t: 1\nmodel name\t: Xeon\n\n",
        );
        assert_eq!(cpus.len(), 2);
        assert_eq!(cpus[0].model_name, "Xeon");
        assert_eq!(cpus[0].cache_size, 266_240);
        assert_eq!(cpus[0].cores, 2);
        assert_eq!(cpus[0].flags, ["fpu", "sse"]);
        assert_eq!(cpus[1].cpu, 1);
    }

    #[test]
    fn collects_this_host() {
        let info = collect();
        assert!(info.errors.is_none(), "{:?}", info.errors);
        assert!(info.memory.is_some_and(|m| m.total > 0));
        assert!(info.disk.is_some_and(|d| d.total > 0));
    }
}
