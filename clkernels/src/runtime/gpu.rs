//! [`Gpu`]: one opened device with its context, one in-order queue, its capabilities and its programs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use opencl3::command_queue::{CommandQueue, CL_QUEUE_PROFILING_ENABLE, CL_QUEUE_PROPERTIES};
use opencl3::context::Context;
use opencl3::device::Device;
use opencl3::program::Program;

use crate::runtime::build;
use crate::runtime::cache::{BinaryCache, CacheKey, CachePolicy, Rejection};
use crate::runtime::device::{list_devices, select};
use crate::runtime::priority::{self, PerfHint, PriorityReport, QueuePriority};
use crate::runtime::program::{build_options, BuildOrigin, BuildStats, ProgramSource};
use crate::runtime::{
    Capabilities, ClError, ClResultExt, DeviceSelector, LaunchLog, ProfileChoice,
};

/// How to open a device.
#[derive(Debug, Clone, Default)]
pub struct GpuOptions {
    /// Which device.
    pub selector: DeviceSelector,
    /// Queue priority.
    pub priority: QueuePriority,
    /// Qualcomm perf hint (ignored elsewhere).
    pub perf_hint: PerfHint,
    /// Where compiled programs are cached.
    pub cache: CachePolicy,
    /// Open the queue with profiling on, so [`crate::kernels::profile_launches`] can time each launch of a
    /// real workload in order (launches ask for an event, which costs host time, only while a profile is being
    /// recorded).
    pub profiling: bool,
    /// Whether compiled programs are read back into tlite's cache.
    pub readback: BinaryReadback,
    /// The phone whose limits and extensions the device is narrowed to (by default `TLITE_DEVICE_PROFILE`'s).
    pub profile: ProfileChoice,
}

/// Whether compiled programs are read back from the driver and kept in tlite's cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BinaryReadback {
    /// Except where the driver keeps its own cache ([`Capabilities::driver_caches_programs`]): there tlite only
    /// marks what it built, so a later start knows the driver's cache will answer.
    #[default]
    Auto,
    /// Always (tests of the cache itself).
    Always,
}

/// An opened device. Cheap to clone: all clones share the context, queue and program cache.
#[derive(Clone)]
pub struct Gpu {
    inner: Arc<Inner>,
}

/// One program's place in memory: empty until built. Its own lock lets different programs build at once on
/// different threads while a second request for the same program waits for the first instead of compiling again.
type ProgramSlot = Arc<Mutex<Option<Arc<Program>>>>;

/// A compiler message from a successful build (kernels should have none; see `tests/build_warnings.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompilerMessage {
    /// The program's name.
    pub program: &'static str,
    /// Its build options.
    pub options: String,
    /// What the compiler said.
    pub log: String,
}

struct Inner {
    // Field order is drop order: programs and queue go before the context.
    programs: Mutex<HashMap<CacheKey, ProgramSlot>>,
    messages: Mutex<Vec<CompilerMessage>>,
    queue: CommandQueue,
    context: Context,
    device: Device,
    caps: Capabilities,
    priority: PriorityReport,
    cache: Option<BinaryCache>,
    readback: bool,
    compiled: AtomicUsize,
    disk_hits: AtomicUsize,
    memory_hits: AtomicUsize,
    rejected_entries: AtomicUsize,
    /// Present when the queue was opened with profiling.
    launch_log: Option<LaunchLog>,
    /// What every kernel built here takes of the per-launch limits.
    usage: crate::runtime::kernel_usage::UsageRegistry,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("device", &self.inner.caps.name)
            .field("priority", &self.inner.priority)
            .field("cache", &self.inner.cache.as_ref().map(BinaryCache::dir))
            .finish_non_exhaustive()
    }
}

impl Gpu {
    /// Opens the selected device with a queue of the requested priority and the default program cache.
    pub fn open(selector: &DeviceSelector, priority: QueuePriority) -> Result<Gpu, ClError> {
        Self::open_with(&GpuOptions {
            selector: selector.clone(),
            priority,
            ..GpuOptions::default()
        })
    }

    /// Opens the device named by `TLITE_DEVICE` (index or name substring), else the first GPU, else the first
    /// device, at normal priority, limited to the profile `TLITE_DEVICE_PROFILE` names, if any.
    pub fn open_default() -> Result<Gpu, ClError> {
        Self::open(&DeviceSelector::from_env(), QueuePriority::Normal)
    }

    /// Opens a device with every option spelled out.
    pub fn open_with(options: &GpuOptions) -> Result<Gpu, ClError> {
        let entries = list_devices()?;
        let entry = select(&entries, &options.selector)?;
        let device = entry.device();
        // Before anything reads the capabilities: queue priority, program defines and every launcher's choices
        // then see the phone's limits and extensions.
        let caps = match options.profile.resolve()? {
            Some(profile) => profile.apply(&entry.caps)?,
            None => entry.caps,
        };
        let mut report = PriorityReport {
            requested: options.priority,
            applied: Vec::new(),
            rejected: Vec::new(),
        };

        let (ctx_props, ctx_used) =
            priority::context_properties(&caps, options.priority, options.perf_hint);
        let context = if ctx_props.is_empty() {
            Context::from_device(&device).cl_call("clCreateContext")?
        } else {
            match Context::from_devices(&[device.id()], &ctx_props, None, std::ptr::null_mut()) {
                Ok(ctx) => {
                    report.applied.extend(ctx_used);
                    ctx
                }
                Err(e) => {
                    tracing::warn!(error = %e, "context priority/perf hints rejected; retrying without them");
                    report.rejected.extend(ctx_used);
                    Context::from_device(&device).cl_call("clCreateContext")?
                }
            }
        };

        // Queue properties are key-value pairs terminated by 0. Profiling, when asked for, is kept if the driver
        // rejects the priority properties and the queue is created again without them.
        let profiling_props = if options.profiling {
            vec![u64::from(CL_QUEUE_PROPERTIES), CL_QUEUE_PROFILING_ENABLE, 0]
        } else {
            Vec::new()
        };
        let (mut queue_props, queue_used) = priority::queue_properties(&caps, options.priority);
        if options.profiling {
            queue_props.pop_if(|v| *v == 0);
            queue_props.extend(&profiling_props);
        }
        let queue = match create_queue(&context, &device, &caps, &queue_props) {
            Ok(q) => {
                report.applied.extend(queue_used);
                q
            }
            Err(e) if !queue_used.is_empty() => {
                tracing::warn!(error = %e, "queue priority properties rejected; retrying without them");
                report.rejected.extend(queue_used);
                create_queue(&context, &device, &caps, &profiling_props)?
            }
            Err(e) => return Err(e),
        };
        priority::log_fallback(&caps, &report);
        tracing::debug!(device = %caps.name, priority = ?report, "opened OpenCL device");

        Ok(Gpu {
            inner: Arc::new(Inner {
                programs: Mutex::new(HashMap::new()),
                messages: Mutex::new(Vec::new()),
                readback: options.readback == BinaryReadback::Always
                    || !caps.driver_caches_programs(),
                queue,
                context,
                device,
                caps,
                priority: report,
                cache: options.cache.resolve().map(BinaryCache::new),
                compiled: AtomicUsize::new(0),
                launch_log: options.profiling.then(LaunchLog::default),
                usage: Default::default(),
                disk_hits: AtomicUsize::new(0),
                memory_hits: AtomicUsize::new(0),
                rejected_entries: AtomicUsize::new(0),
            }),
        })
    }

    /// What the device can do.
    pub fn caps(&self) -> &Capabilities {
        &self.inner.caps
    }

    /// The OpenCL context.
    pub fn context(&self) -> &Context {
        &self.inner.context
    }

    /// Whether the queue was opened with profiling ([`GpuOptions::profiling`]).
    pub fn profiling(&self) -> bool {
        self.inner.launch_log.is_some()
    }

    /// Where launches on this device's queue are recorded while a profile is taken (`None` without profiling).
    /// Each kernel built on this device so far, with its local memory and the widest work-group it ran: what a
    /// phone's limits must allow for the same work (tests hold it against every device profile).
    pub fn kernel_usage(&self) -> Vec<crate::runtime::KernelUsage> {
        self.inner.usage.snapshot()
    }

    /// Starts the usage record of a build of `kernel`.
    pub(crate) fn register_kernel(
        &self,
        kernel: &'static str,
        local_mem_bytes: u64,
    ) -> std::sync::Arc<crate::runtime::UsageRecord> {
        self.inner.usage.register(kernel, local_mem_bytes)
    }

    pub(crate) fn launch_log(&self) -> Option<&LaunchLog> {
        self.inner.launch_log.as_ref()
    }

    /// The one in-order command queue.
    pub fn queue(&self) -> &CommandQueue {
        &self.inner.queue
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.inner.device
    }

    /// Which priority mechanisms took effect.
    pub fn priority_applied(&self) -> &PriorityReport {
        &self.inner.priority
    }

    /// The on-disk program cache, if enabled.
    pub fn binary_cache(&self) -> Option<&BinaryCache> {
        self.inner.cache.as_ref()
    }

    /// Counts of compilations and cache hits so far.
    pub fn build_stats(&self) -> BuildStats {
        BuildStats {
            compiled: self.inner.compiled.load(Ordering::Relaxed),
            disk_hits: self.inner.disk_hits.load(Ordering::Relaxed),
            memory_hits: self.inner.memory_hits.load(Ordering::Relaxed),
            rejected_entries: self.inner.rejected_entries.load(Ordering::Relaxed),
        }
    }

    /// Waits for all queued work.
    pub fn finish(&self) -> Result<(), ClError> {
        self.inner.queue.finish().cl_call("clFinish")
    }

    /// Builds (or loads from the binary cache) an embedded program. The capability defines (`TLITE_HAS_FP16`,
    /// `TLITE_HAS_SUBGROUPS`, `TLITE_VENDOR_ADRENO`/`_MALI`/`_NVIDIA`/`_INTEL`/`_POCL`/`_OTHER`, …) are added
    /// automatically; `extra_defines` are `(NAME, VALUE)` pairs (an empty value defines the bare name).
    pub fn program(
        &self,
        src: &ProgramSource,
        extra_defines: &[(&str, &str)],
    ) -> Result<Arc<Program>, ClError> {
        self.program_with_origin(src, extra_defines).map(|(p, _)| p)
    }

    /// As [`Gpu::program`], also saying where the program came from.
    pub fn program_with_origin(
        &self,
        src: &ProgramSource,
        extra_defines: &[(&str, &str)],
    ) -> Result<(Arc<Program>, BuildOrigin), ClError> {
        let options = build_options(&self.inner.caps, extra_defines)?;
        let key = self.key(src, &options);
        let slot = {
            let mut programs = lock(&self.inner.programs);
            Arc::clone(programs.entry(key).or_default())
        };
        let mut built = lock(&slot);
        if let Some(p) = built.as_ref() {
            self.inner.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok((Arc::clone(p), BuildOrigin::Memory));
        }
        let (program, origin) = self.load_or_compile(src, &options, &key)?;
        let program = Arc::new(program);
        *built = Some(Arc::clone(&program));
        Ok((program, origin))
    }

    /// Builds (or loads) several programs at once, on up to as many threads as the host has cores: drivers
    /// compile independent programs concurrently, and a cold start on a phone or a 2-core PC is mostly compiler
    /// time. Afterwards [`Gpu::program`] answers these requests from memory. The first error is returned.
    pub fn programs(
        &self,
        requests: &[(&ProgramSource, &[(&str, &str)])],
    ) -> Result<Vec<Arc<Program>>, ClError> {
        let threads = std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .min(requests.len());
        if threads <= 1 {
            return requests.iter().map(|(s, d)| self.program(s, d)).collect();
        }
        let next = AtomicUsize::new(0);
        let mut built: Vec<(usize, Result<Arc<Program>, ClError>)> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some((src, defines)) = requests.get(i) else {
                                break done;
                            };
                            done.push((i, self.program(src, defines)));
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| {
                    w.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        });
        built.sort_by_key(|(i, _)| *i);
        built.into_iter().map(|(_, r)| r).collect()
    }

    /// What the compiler said while building programs that succeeded, in build order (empty when every kernel
    /// built cleanly; programs loaded from a cache add nothing).
    pub fn compiler_messages(&self) -> Vec<CompilerMessage> {
        lock(&self.inner.messages).clone()
    }

    fn key(&self, src: &ProgramSource, options: &str) -> CacheKey {
        let caps = &self.inner.caps;
        CacheKey::new(
            &[
                &caps.platform_name,
                &caps.platform_version,
                &caps.name,
                &caps.driver_version,
                &caps.opencl_version,
            ],
            options,
            src.source,
        )
    }

    fn load_or_compile(
        &self,
        src: &ProgramSource,
        options: &str,
        key: &CacheKey,
    ) -> Result<(Program, BuildOrigin), ClError> {
        let device_id = self.inner.device.id();
        let cache = self.inner.cache.as_ref();
        if let Some(cache) = cache.filter(|_| self.inner.readback) {
            match cache.load(key) {
                Ok(binary) => {
                    // SAFETY: the device belongs to this context.
                    let built = unsafe {
                        Program::create_from_binary(&self.inner.context, &[device_id], &[&binary])
                    }
                    .and_then(|mut p| p.build(&[device_id], options).map(|()| p));
                    match built {
                        Ok(p) => {
                            self.inner.disk_hits.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(
                                program = src.name,
                                "program loaded from the binary cache"
                            );
                            return Ok((p, BuildOrigin::DiskCache));
                        }
                        Err(e) => {
                            self.inner.rejected_entries.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(program = src.name, error = %e, "driver rejected a cached binary; rebuilding");
                            cache.remove(key);
                        }
                    }
                }
                Err(Rejection::Missing) => {}
                Err(reason) => {
                    self.inner.rejected_entries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        program = src.name,
                        ?reason,
                        "ignoring an invalid program-cache entry; rebuilding"
                    );
                }
            }
        }
        // Where the driver caches builds itself, a program tlite marked as built before comes from that cache.
        let driver_hit =
            !self.inner.readback && cache.is_some_and(|cache| cache.is_marked_built(key));
        if !driver_hit {
            build::notify_compiling();
        }
        let (program, log) = build::compile(&self.inner.context, device_id, src, options)?;
        self.inner.compiled.fetch_add(1, Ordering::Relaxed);
        if !log.is_empty() {
            lock(&self.inner.messages).push(CompilerMessage {
                program: src.name,
                options: options.to_string(),
                log,
            });
        }
        match cache {
            Some(cache) if !self.inner.readback => {
                if let Err(e) = cache.mark_built(key) {
                    tracing::debug!(dir = %cache.dir().display(), error = %e, "could not mark a program built");
                }
            }
            Some(cache) => store_binary(cache, key, src, &program),
            None => {}
        }
        Ok((program, BuildOrigin::Compiled))
    }
}

/// Reads the compiled binary back and keeps it for the next start.
fn store_binary(cache: &BinaryCache, key: &CacheKey, src: &ProgramSource, program: &Program) {
    match program.get_binaries() {
        Ok(binaries) => match binaries.first().filter(|b| !b.is_empty()) {
            Some(binary) => {
                if let Err(e) = cache.store(key, binary) {
                    tracing::warn!(dir = %cache.dir().display(), error = %e, "could not write the program cache");
                }
            }
            None => tracing::debug!(program = src.name, "driver returned no binary to cache"),
        },
        Err(e) => {
            tracing::debug!(program = src.name, error = %e, "driver cannot return program binaries")
        }
    }
}

/// Locks, ignoring poisoning (a panic elsewhere leaves the protected data consistent: whole values only).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn create_queue(
    context: &Context,
    device: &Device,
    caps: &Capabilities,
    props: &[u64],
) -> Result<CommandQueue, ClError> {
    let max_dims = caps.max_work_item_sizes.len() as u32;
    let at_least_2 = caps.opencl_version_number.is_some_and(|v| v.major >= 2);
    if at_least_2 {
        let ptr = if props.is_empty() {
            std::ptr::null()
        } else {
            props.as_ptr()
        };
        // SAFETY: the device belongs to the context; props is zero-terminated or null.
        let queue = unsafe {
            cl3::command_queue::create_command_queue_with_properties(
                context.get(),
                device.id(),
                ptr,
            )
        }
        .cl_call("clCreateCommandQueueWithProperties")?;
        Ok(CommandQueue::new(queue, max_dims.max(1)))
    } else if !props.is_empty() && caps.has_extension("cl_khr_create_command_queue") {
        CommandQueue::create_with_properties_khr(context, device.id(), props)
            .cl_call("clCreateCommandQueueWithPropertiesKHR")
    } else if !props.is_empty() {
        Err(ClError::Call {
            call: "clCreateCommandQueue",
            code: opencl3::error_codes::CL_INVALID_QUEUE_PROPERTIES,
            name: "CL_INVALID_QUEUE_PROPERTIES",
        })
    } else {
        // SAFETY: the device belongs to the context.
        #[allow(deprecated)]
        let queue =
            unsafe { cl3::command_queue::create_command_queue(context.get(), device.id(), 0) }
                .cl_call("clCreateCommandQueue")?;
        Ok(CommandQueue::new(queue, max_dims.max(1)))
    }
}
