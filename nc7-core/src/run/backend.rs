//! The backends nc7 runs on, the `--device` a user names, and moving keyed values between a
//! training backend (with autodiff) and its inner backend without copying tensors.

use std::fmt;
use std::str::FromStr;

use burn::prelude::Backend;
use burn::tensor::TensorPrimitive;
use burn::tensor::backend::AutodiffBackend;

use crate::nest::{AnyTensor, Nest};

/// The embedded default backend: burn's Flex, pure Rust, on the CPU (gemm matrix products,
/// strided views, threads and SIMD), with nc7's own convolution and max-pooling kernels.
pub type Cpu = burn::backend::Flex;
/// Training on the CPU: the default backend with autodiff.
pub type CpuTrain = burn::backend::Autodiff<Cpu>;
/// burn's NdArray CPU backend (cargo feature `ndarray`), `--device ndarray`: the default
/// before Flex, slower on every model measured.
#[cfg(feature = "ndarray")]
pub type NdArray = burn::backend::NdArray;
/// Training on NdArray.
#[cfg(feature = "ndarray")]
pub type NdArrayTrain = burn::backend::Autodiff<NdArray>;
/// burn's CUDA backend (cargo feature `cuda`); the driver is loaded at run time.
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda;
/// Training on CUDA.
#[cfg(feature = "cuda")]
pub type CudaTrain = burn::backend::Autodiff<Cuda>;

/// Runs `$body` with the type alias `$b` set to the backend whose `TypeId` is `$id`, among
/// the backends without autodiff; `None` for any other backend.
macro_rules! on_inner_backend {
    ($id:expr, $b:ident => $body:expr) => {{
        let id: ::std::any::TypeId = $id;
        let mut out = None;
        if id == ::std::any::TypeId::of::<$crate::backend::Cpu>() {
            type $b = $crate::backend::Cpu;
            out = Some($body);
        }
        #[cfg(feature = "ndarray")]
        if out.is_none() && id == ::std::any::TypeId::of::<$crate::backend::NdArray>() {
            type $b = $crate::backend::NdArray;
            out = Some($body);
        }
        #[cfg(feature = "cuda")]
        if out.is_none() && id == ::std::any::TypeId::of::<$crate::backend::Cuda>() {
            type $b = $crate::backend::Cuda;
            out = Some($body);
        }
        out
    }};
}

/// Like `on_inner_backend!`, among the training (autodiff) backends.
macro_rules! on_train_backend {
    ($id:expr, $b:ident => $body:expr) => {{
        let id: ::std::any::TypeId = $id;
        let mut out = None;
        if id == ::std::any::TypeId::of::<$crate::backend::CpuTrain>() {
            type $b = $crate::backend::CpuTrain;
            out = Some($body);
        }
        #[cfg(feature = "ndarray")]
        if out.is_none() && id == ::std::any::TypeId::of::<$crate::backend::NdArrayTrain>() {
            type $b = $crate::backend::NdArrayTrain;
            out = Some($body);
        }
        #[cfg(feature = "cuda")]
        if out.is_none() && id == ::std::any::TypeId::of::<$crate::backend::CudaTrain>() {
            type $b = $crate::backend::CudaTrain;
            out = Some($body);
        }
        out
    }};
}

pub(crate) use {on_inner_backend, on_train_backend};

/// Where a run computes, as `--device` and the trainer config's `device` write it: `cpu`,
/// `ndarray`, `cuda` or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The CPU (Flex).
    #[default]
    Cpu,
    /// The CPU through burn's NdArray backend (cargo feature `ndarray`).
    NdArray,
    /// The CUDA GPU with this index.
    Cuda(usize),
}

impl DeviceChoice {
    /// The device a run uses: the command line's `--device`, else the config's `field`
    /// (`trainer_config.device`); it must be one this build can use.
    pub fn resolve(
        given: Option<DeviceChoice>,
        config: &str,
        field: &str,
    ) -> Result<DeviceChoice, DeviceError> {
        let device = match given {
            Some(d) => d,
            None => config
                .parse()
                .map_err(|source: BadDevice| DeviceError::Unknown {
                    field: field.to_owned(),
                    source,
                })?,
        };
        device.available()?;
        Ok(device)
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::NdArray => f.write_str("ndarray"),
            DeviceChoice::Cuda(0) => f.write_str("cuda"),
            DeviceChoice::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// Why a run cannot use the device it names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// The config names no device nc7 knows.
    #[error("{field}: {source}")]
    Unknown {
        /// The config field (`trainer_config.device`).
        field: String,
        /// The name given.
        source: BadDevice,
    },
    /// The device's backend is not in this build.
    #[error(
        "device `{device}` needs a build with the `{}` feature: build with `--features {}`{}",
        device.feature(),
        device.feature(),
        if matches!(device, DeviceChoice::Cuda(_)) { " (`cargo xtask train --device cuda` does)" } else { "" }
    )]
    NotBuilt {
        /// The device.
        device: DeviceChoice,
    },
    /// The NVIDIA driver cannot run the device.
    #[error(
        "device `{device}`: {problem}; install the NVIDIA driver, put the folder holding libcuda.so.1 on LD_LIBRARY_PATH, or run with `--device cpu`"
    )]
    NoDriver {
        /// The device.
        device: DeviceChoice,
        /// What the probe found.
        problem: String,
    },
}

/// Whether the NVIDIA driver loads, starts and has GPU `index`: asked before anything is
/// built on the device, so that a machine without the driver gets an answer instead of a
/// panic inside the CUDA runtime.
pub fn probe_cuda(index: usize) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::ffi::{CStr, CString};
        // SAFETY: dlopen/dlsym/dlerror with NUL-terminated names; the two driver entry points
        // are called with the C signatures the CUDA driver API documents
        // (`CUresult cuInit(unsigned int)`, `CUresult cuDeviceGetCount(int*)`).
        unsafe {
            let mut handle = std::ptr::null_mut();
            for name in ["libcuda.so.1", "libcuda.so"] {
                let name = CString::new(name).expect("no NUL");
                handle = libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
                if !handle.is_null() {
                    break;
                }
            }
            if handle.is_null() {
                let why = libc::dlerror();
                let why = if why.is_null() {
                    "not found".to_owned()
                } else {
                    CStr::from_ptr(why).to_string_lossy().into_owned()
                };
                return Err(format!(
                    "the NVIDIA driver's library libcuda.so.1 cannot be loaded ({why})"
                ));
            }
            let symbol = |name: &str| {
                let name = CString::new(name).expect("no NUL");
                libc::dlsym(handle, name.as_ptr())
            };
            let (init, count) = (symbol("cuInit"), symbol("cuDeviceGetCount"));
            if init.is_null() || count.is_null() {
                return Err("libcuda.so.1 lacks cuInit or cuDeviceGetCount".into());
            }
            let init: extern "C" fn(u32) -> i32 = std::mem::transmute(init);
            let count: extern "C" fn(*mut i32) -> i32 = std::mem::transmute(count);
            let code = init(0);
            if code != 0 {
                return Err(format!(
                    "the NVIDIA driver does not start (cuInit: error {code}; `nvidia-smi` shows whether this process sees a GPU)"
                ));
            }
            let mut n = 0i32;
            let code = count(&mut n);
            if code != 0 {
                return Err(format!(
                    "the NVIDIA driver cannot count its GPUs (error {code})"
                ));
            }
            if index >= n.max(0) as usize {
                return Err(format!(
                    "there is no GPU {index}: the driver sees {n} (cuda:0 to cuda:{})",
                    (n - 1).max(0)
                ));
            }
            Ok(())
        }
    }
    #[cfg(not(unix))]
    {
        let _ = index;
        Ok(())
    }
}

/// A device name that is not `cpu`, `cuda` or `cuda:N`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown device `{0}`; write `cpu`, `ndarray`, `cuda` or `cuda:N` (N the GPU's index)")]
pub struct BadDevice(pub String);

impl FromStr for DeviceChoice {
    type Err = BadDevice;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            // `cpu:N` names one of several CPU replicas (`--devices cpu:0,cpu:1`); they share
            // the one CPU device.
            "cpu" => Ok(DeviceChoice::Cpu),
            _ if t
                .strip_prefix("cpu:")
                .is_some_and(|i| i.parse::<usize>().is_ok()) =>
            {
                Ok(DeviceChoice::Cpu)
            }
            "ndarray" => Ok(DeviceChoice::NdArray),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
            _ => t
                .strip_prefix("cuda:")
                .and_then(|i| i.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| BadDevice(s.to_owned())),
        }
    }
}

/// The devices of a data-parallel run (`--devices`, `trainer_config.devices`), each entry
/// `cpu:N`, `cuda:N`, `ndarray:N` or `cuda:all` (every GPU the driver sees): one kind, no
/// device twice, at least one.
pub fn parse_devices(list: &[String]) -> Result<Vec<DeviceChoice>, BadDevices> {
    let mut names: Vec<String> = Vec::new();
    let mut devices = Vec::new();
    for entry in list {
        let t = entry.trim().to_ascii_lowercase();
        if t == "cuda:all" {
            let n = cuda_count().map_err(BadDevices::All)?;
            for i in 0..n {
                names.push(format!("cuda:{i}"));
                devices.push(DeviceChoice::Cuda(i));
            }
            continue;
        }
        let device: DeviceChoice = t.parse()?;
        let name = match (device, t.split_once(':')) {
            (DeviceChoice::Cuda(i), _) => format!("cuda:{i}"),
            (_, Some((_, i))) => format!("{device}:{i}"),
            (_, None) => format!("{device}:0"),
        };
        if names.contains(&name) {
            return Err(BadDevices::Twice(entry.clone()));
        }
        if let Some(first) = devices.first()
            && std::mem::discriminant(first) != std::mem::discriminant(&device)
        {
            return Err(BadDevices::Mixed(entry.clone(), names[0].clone()));
        }
        names.push(name);
        devices.push(device);
    }
    if devices.is_empty() {
        return Err(BadDevices::Empty);
    }
    Ok(devices)
}

/// Why a list of devices cannot be a run's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadDevices {
    /// An entry names no device.
    #[error(transparent)]
    Unknown(#[from] BadDevice),
    /// A device is named twice.
    #[error(
        "`{0}` is named twice: each replica needs its own device (`cpu:0,cpu:1`, `cuda:0,cuda:1`)"
    )]
    Twice(String),
    /// Devices of two kinds.
    #[error("`{0}` beside `{1}`: the devices of one run are all of one kind")]
    Mixed(String, String),
    /// No device.
    #[error("no device named: give at least one, such as `cpu:0,cpu:1`")]
    Empty,
    /// `cuda:all` without GPUs.
    #[error("`cuda:all`: {0}")]
    All(String),
}

/// How a run's devices are written in its record: `cpu`, `cuda:1`, or `cpu:0,cpu:1` for
/// several.
pub fn describe_devices(devices: &[DeviceChoice]) -> String {
    match devices {
        [one] => one.to_string(),
        _ => devices
            .iter()
            .enumerate()
            .map(|(k, d)| match d {
                DeviceChoice::Cuda(i) => format!("cuda:{i}"),
                other => format!("{other}:{k}"),
            })
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// The number of GPUs the NVIDIA driver sees (`cuda:all`).
fn cuda_count() -> Result<usize, String> {
    if !cfg!(feature = "cuda") {
        return Err("`cuda:all` needs a build with the `cuda` feature".into());
    }
    let mut n = 0;
    while probe_cuda(n).is_ok() {
        n += 1;
    }
    match n {
        0 => probe_cuda(0).map(|()| 0),
        n => Ok(n),
    }
}

impl DeviceChoice {
    /// The device's index among the devices of its backend (the GPU's; 0 on the CPU, whose
    /// replicas share one device).
    pub fn index(self) -> usize {
        match self {
            DeviceChoice::Cuda(i) => i,
            _ => 0,
        }
    }

    /// Whether the device's backend computes in `precision` (NdArray has no half precision).
    pub fn supports(self, precision: crate::precision::Precision) -> bool {
        match self {
            DeviceChoice::Cpu => precision.supported_by::<Cpu>(&Default::default()),
            DeviceChoice::NdArray => {
                precision.supported_by::<burn::backend::NdArray>(&Default::default())
            }
            #[cfg(feature = "cuda")]
            DeviceChoice::Cuda(i) => {
                precision.supported_by::<Cuda>(&burn::backend::cuda::CudaDevice::new(i))
            }
            // Refused before: the build has no CUDA.
            #[cfg(not(feature = "cuda"))]
            DeviceChoice::Cuda(_) => false,
        }
    }

    /// The cargo feature that builds the device's backend in (none for the CPU's).
    pub fn feature(self) -> &'static str {
        match self {
            DeviceChoice::Cpu => "",
            DeviceChoice::NdArray => "ndarray",
            DeviceChoice::Cuda(_) => "cuda",
        }
    }

    /// Whether this build can run on the device (CUDA needs the `cuda` feature, NdArray
    /// `ndarray`).
    pub fn available(self) -> Result<(), DeviceError> {
        match self {
            DeviceChoice::Cpu => Ok(()),
            DeviceChoice::NdArray if cfg!(feature = "ndarray") => Ok(()),
            DeviceChoice::NdArray => Err(DeviceError::NotBuilt { device: self }),
            DeviceChoice::Cuda(i) if cfg!(feature = "cuda") => {
                probe_cuda(i).map_err(|problem| DeviceError::NoDriver {
                    device: self,
                    problem,
                })
            }
            DeviceChoice::Cuda(_) => Err(DeviceError::NotBuilt { device: self }),
        }
    }
}

/// Work that runs on the backend a [`DeviceChoice`] names: the trainer, the inferer and export
/// say what they do once, generic over the backend, and [`DeviceChoice::dispatch`] picks it.
pub trait OnDevice {
    /// What the work returns.
    type Output;

    /// Runs on `B` (a training backend; its inner backend runs inference) on `device`, whose
    /// inner backend's device is `inner`.
    fn run<B: AutodiffBackend>(
        self,
        device: &B::Device,
        inner: &burn::tensor::Device<B::InnerBackend>,
    ) -> Self::Output;
}

impl DeviceChoice {
    /// Runs `work` on this device's backend. The device must be [`available`](Self::available)
    /// in this build, which run plans check before anything runs.
    pub fn dispatch<W: OnDevice>(self, work: W) -> W::Output {
        match self {
            DeviceChoice::Cpu => work.run::<CpuTrain>(&Default::default(), &Default::default()),
            #[cfg(feature = "ndarray")]
            DeviceChoice::NdArray => {
                work.run::<NdArrayTrain>(&Default::default(), &Default::default())
            }
            #[cfg(not(feature = "ndarray"))]
            DeviceChoice::NdArray => unreachable!("run plans refuse devices this build lacks"),
            #[cfg(feature = "cuda")]
            DeviceChoice::Cuda(i) => {
                let d = burn::backend::cuda::CudaDevice::new(i);
                work.run::<CudaTrain>(&d, &d)
            }
            #[cfg(not(feature = "cuda"))]
            DeviceChoice::Cuda(_) => unreachable!("run plans refuse devices this build lacks"),
        }
    }
}

/// Whether `B` keeps tensors in this process's memory (the CPU backend, with or without
/// autodiff): reading a tensor's data and making one from data are then free or one copy,
/// not a transfer to or from a device.
pub(crate) fn on_host<B: Backend>() -> bool {
    let id = std::any::TypeId::of::<B>();
    #[cfg(feature = "ndarray")]
    if id == std::any::TypeId::of::<NdArray>() || id == std::any::TypeId::of::<NdArrayTrain>() {
        return true;
    }
    id == std::any::TypeId::of::<Cpu>() || id == std::any::TypeId::of::<CpuTrain>()
}

/// Takes a tensor off the autodiff graph onto the inner backend; the data is not copied.
pub(crate) fn tensor_to_inner<B: AutodiffBackend>(t: AnyTensor<B>) -> AnyTensor<B::InnerBackend> {
    match t {
        AnyTensor::Float(TensorPrimitive::Float(p)) => {
            AnyTensor::Float(TensorPrimitive::Float(B::inner(p)))
        }
        AnyTensor::Float(TensorPrimitive::QFloat(q)) => {
            AnyTensor::Float(TensorPrimitive::QFloat(B::q_inner(q)))
        }
        AnyTensor::Int(p) => AnyTensor::Int(B::int_inner(p)),
        AnyTensor::Bool(p) => AnyTensor::Bool(B::bool_inner(p)),
    }
}

/// Puts an inner-backend tensor on the autodiff backend (not tracked); the data is not copied.
pub(crate) fn tensor_from_inner<B: AutodiffBackend>(t: AnyTensor<B::InnerBackend>) -> AnyTensor<B> {
    match t {
        AnyTensor::Float(TensorPrimitive::Float(p)) => {
            AnyTensor::Float(TensorPrimitive::Float(B::from_inner(p)))
        }
        AnyTensor::Float(TensorPrimitive::QFloat(q)) => {
            AnyTensor::Float(TensorPrimitive::QFloat(B::q_from_inner(q)))
        }
        AnyTensor::Int(p) => AnyTensor::Int(B::int_from_inner(p)),
        AnyTensor::Bool(p) => AnyTensor::Bool(B::bool_from_inner(p)),
    }
}

/// Maps every tensor of a nest onto another backend, keeping its structure and other leaves.
pub(crate) fn map_nest<A: Backend, B: Backend>(
    nest: Nest<A>,
    f: &mut impl FnMut(AnyTensor<A>) -> AnyTensor<B>,
) -> Nest<B> {
    match nest {
        Nest::Map(m) => Nest::Map(m.into_iter().map(|(k, v)| (k, map_nest(v, f))).collect()),
        Nest::List(l) => Nest::List(l.into_iter().map(|v| map_nest(v, f)).collect()),
        Nest::Tensor(t) => Nest::Tensor(f(t)),
        Nest::Float(x) => Nest::Float(x),
        Nest::Int(x) => Nest::Int(x),
        Nest::Bool(x) => Nest::Bool(x),
        Nest::Str(x) => Nest::Str(x),
    }
}

/// A nest off the autodiff graph, on the inner backend.
pub(crate) fn nest_to_inner<B: AutodiffBackend>(nest: Nest<B>) -> Nest<B::InnerBackend> {
    map_nest(nest, &mut tensor_to_inner::<B>)
}

/// A nest of the inner backend on the autodiff backend.
pub(crate) fn nest_from_inner<B: AutodiffBackend>(nest: Nest<B::InnerBackend>) -> Nest<B> {
    map_nest(nest, &mut tensor_from_inner::<B>)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_lists() {
        let list = |l: &[&str]| parse_devices(&l.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            list(&["cpu:0", "CPU:1"]),
            Ok(vec![DeviceChoice::Cpu, DeviceChoice::Cpu])
        );
        assert_eq!(
            describe_devices(&[DeviceChoice::Cpu, DeviceChoice::Cpu]),
            "cpu:0,cpu:1"
        );
        assert_eq!(describe_devices(&[DeviceChoice::Cuda(3)]), "cuda:3");
        assert_eq!(
            describe_devices(&[DeviceChoice::Cuda(0), DeviceChoice::Cuda(2)]),
            "cuda:0,cuda:2"
        );
        assert_eq!(
            list(&["cuda:1", "cuda:0"]),
            Ok(vec![DeviceChoice::Cuda(1), DeviceChoice::Cuda(0)])
        );
        assert_eq!(
            list(&["cpu", "cpu:0"]),
            Err(BadDevices::Twice("cpu:0".into()))
        );
        assert_eq!(
            list(&["cuda:0", "cuda"]),
            Err(BadDevices::Twice("cuda".into()))
        );
        assert_eq!(
            list(&["cpu:0", "cuda:1"]),
            Err(BadDevices::Mixed("cuda:1".into(), "cpu:0".into()))
        );
        assert_eq!(list(&[]), Err(BadDevices::Empty));
        assert!(matches!(list(&["tpu:0"]), Err(BadDevices::Unknown(_))));
        // `cuda:all` counts the GPUs the driver sees; without the feature or a GPU it says so.
        if !cfg!(feature = "cuda") {
            let err = list(&["cuda:all"]).unwrap_err().to_string();
            assert!(
                err.contains("`cuda:all` needs a build with the `cuda` feature"),
                "{err}"
            );
        } else if probe_cuda(0).is_err() {
            assert!(matches!(list(&["cuda:all"]), Err(BadDevices::All(_))));
        }
    }

    #[test]
    fn device_names() {
        assert_eq!("cpu".parse(), Ok(DeviceChoice::Cpu));
        assert_eq!("CUDA".parse(), Ok(DeviceChoice::Cuda(0)));
        // Without the NVIDIA driver (CI, this machine) the probe says what is missing; a CUDA
        // build refuses the device with it instead of panicking inside the runtime.
        if !std::path::Path::new("/dev/nvidiactl").exists() {
            assert!(
                probe_cuda(0).is_err(),
                "no GPU here, yet the probe found one"
            );
        }
        if let Err(problem) = probe_cuda(0) {
            assert!(
                problem.contains("libcuda.so.1") || problem.contains("NVIDIA driver"),
                "{problem}"
            );
            let err = DeviceError::NoDriver {
                device: DeviceChoice::Cuda(0),
                problem,
            }
            .to_string();
            assert!(
                err.contains("--device cpu") && err.contains("LD_LIBRARY_PATH"),
                "{err}"
            );
        }
        assert_eq!("cuda:3".parse(), Ok(DeviceChoice::Cuda(3)));
        assert_eq!(DeviceChoice::Cuda(3).to_string(), "cuda:3");
        let err = "tpu".parse::<DeviceChoice>().unwrap_err();
        assert!(
            err.to_string()
                .contains("`cpu`, `ndarray`, `cuda` or `cuda:N`")
        );
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
        assert_eq!("NdArray".parse(), Ok(DeviceChoice::NdArray));
        assert_eq!(DeviceChoice::NdArray.to_string(), "ndarray");
        // Without the feature, `ndarray` is refused with the feature to build it with.
        if !cfg!(feature = "ndarray") {
            let err = DeviceChoice::NdArray.available().unwrap_err().to_string();
            assert!(err.contains("--features ndarray"), "{err}");
        }
    }
}
