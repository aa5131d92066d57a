//! Model profiles: named presets that say how to turn an image into the model's input tensor and
//! the model's output tensors into the payload MLPerf's accuracy scripts read. Names follow the
//! reference `vision/classification_and_detection/python/main.py` where it has one.

use inference_proto::DataType;

/// Order of the colour channels in the input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorOrder {
    Rgb,
    Bgr,
    /// One luminance channel.
    Gray,
}

impl ColorOrder {
    /// Number of channels in the tensor.
    pub fn channels(self) -> usize {
        match self {
            ColorOrder::Rgb | ColorOrder::Bgr => 3,
            ColorOrder::Gray => 1,
        }
    }
}

/// Memory layout of one image tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Channels first: `[C, H, W]` per sample.
    Nchw,
    /// Channels last: `[H, W, C]` per sample.
    Nhwc,
}

/// How the decoded image is brought to the model's spatial size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resize {
    /// Scale so the short side is `short_side` (keeping the aspect ratio), then crop the centre.
    ShortSideThenCenterCrop { short_side: u32 },
    /// Scale both sides to the model size, ignoring the aspect ratio.
    Stretch,
}

/// Element type of the input tensor; the quantised types map a normalised value `v` to
/// `round(v / scale) + zero_point`, saturated to the type's range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InputType {
    F32,
    F16,
    U8 { scale: f32, zero_point: i32 },
    I8 { scale: f32, zero_point: i32 },
}

impl InputType {
    /// The KServe datatype sent on the wire.
    pub fn data_type(self) -> DataType {
        match self {
            InputType::F32 => DataType::Fp32,
            InputType::F16 => DataType::Fp16,
            InputType::U8 { .. } => DataType::Uint8,
            InputType::I8 { .. } => DataType::Int8,
        }
    }

    /// Bytes per element.
    pub fn element_size(self) -> usize {
        match self {
            InputType::F32 => 4,
            InputType::F16 => 2,
            InputType::U8 { .. } | InputType::I8 { .. } => 1,
        }
    }
}

/// How the model output becomes the accuracy payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostProcess {
    /// Output 0 holds scores per class; payload = `argmax + offset` as one float32
    /// (offset -1 drops a background class 0).
    ArgMax { offset: i64 },
    /// Output 0 already holds the class index; payload = `value + offset` as one float32.
    ClassIndex { offset: i64 },
    /// TensorFlow object-detection outputs in the order `num_detections, boxes (ymin, xmin, ymax,
    /// xmax, normalised), scores, classes`; payload = 7-float groups `[qsl_idx, ymin, xmin, ymax,
    /// xmax, score, class]`.
    Detections,
}

/// Everything the client needs to know about a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Profile name as given to `--profile`.
    pub name: &'static str,
    /// Served model name the profile expects by default (`--model` overrides it).
    pub model: &'static str,
    /// MLPerf benchmark name used for mlperf.conf / user.conf look-ups.
    pub mlperf_model: &'static str,
    /// Dataset kind the profile is made for (`imagenet` or `coco`).
    pub dataset: &'static str,
    /// Model input tensor name.
    pub input: &'static str,
    /// Model output tensor names, in the order `post_process` reads them.
    pub outputs: &'static [&'static str],
    /// Model input height in pixels.
    pub height: u32,
    /// Model input width in pixels.
    pub width: u32,
    /// Channel order (or gray) of the input tensor.
    pub color: ColorOrder,
    /// Tensor layout of one sample.
    pub layout: Layout,
    /// How the image reaches the input size.
    pub resize: Resize,
    /// Per-channel mean subtracted from the 0–255 pixel value (in tensor channel order).
    pub mean: [f32; 3],
    /// Per-channel divisor applied after the mean (in tensor channel order).
    pub std: [f32; 3],
    /// Element type sent on the wire.
    pub input_type: InputType,
    /// How outputs become the accuracy payload.
    pub post_process: PostProcess,
    /// Default QSL performance sample count.
    pub performance_sample_count: usize,
}

impl Profile {
    /// Shape of one sample, without the batch dimension.
    pub fn sample_shape(&self) -> [i64; 3] {
        let (c, h, w) = (
            self.color.channels() as i64,
            i64::from(self.height),
            i64::from(self.width),
        );
        match self.layout {
            Layout::Nchw => [c, h, w],
            Layout::Nhwc => [h, w, c],
        }
    }

    /// Number of elements in one sample.
    pub fn sample_elements(&self) -> usize {
        self.color.channels() * self.height as usize * self.width as usize
    }

    /// Number of bytes of one preprocessed sample.
    pub fn sample_bytes(&self) -> usize {
        self.sample_elements() * self.input_type.element_size()
    }

    /// This profile with another input quantization; `None` when its input is not quantized.
    pub fn with_input_quantization(&self, scale: f32, zero_point: i32) -> Option<Profile> {
        let input_type = match self.input_type {
            InputType::U8 { .. } => InputType::U8 { scale, zero_point },
            InputType::I8 { .. } => InputType::I8 { scale, zero_point },
            InputType::F32 | InputType::F16 => return None,
        };
        Some(Profile {
            input_type,
            ..self.clone()
        })
    }

    /// The folder of its preprocessed-tensor cache: the name, and the input quantization, which
    /// changes the bytes.
    pub fn cache_name(&self) -> String {
        match self.input_type {
            InputType::U8 { scale, zero_point } | InputType::I8 { scale, zero_point } => {
                format!("{}-q{scale}-{zero_point}", self.name)
            }
            InputType::F32 | InputType::F16 => self.name.to_string(),
        }
    }
}

/// A `--profile` name that is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown profile '{0}'; known profiles: {known}", known = names().join(", "))]
pub struct UnknownProfile(pub String);

const IMAGENET_VGG_MEAN: [f32; 3] = [123.68, 116.78, 103.94];
/// `(x / 255 - 0.5) * 2` written as `(x - 127.5) / 127.5`.
const SYMMETRIC: ([f32; 3], [f32; 3]) = ([127.5; 3], [127.5; 3]);
const IMAGENET_PERF_SAMPLES: usize = 1024;
const COCO_PERF_SAMPLES: usize = 256;

/// The MLPerf ResNet50 ONNX model on ONNX Runtime (the base of its other backends' profiles).
const RESNET50_ONNXRUNTIME: Profile = Profile {
    name: "resnet50-onnxruntime",
    model: "resnet50",
    mlperf_model: "resnet50",
    dataset: "imagenet",
    input: "input_tensor:0",
    outputs: &["ArgMax:0"],
    height: 224,
    width: 224,
    color: ColorOrder::Rgb,
    layout: Layout::Nchw,
    resize: Resize::ShortSideThenCenterCrop { short_side: 256 },
    mean: IMAGENET_VGG_MEAN,
    std: [1.0; 3],
    input_type: InputType::F32,
    post_process: PostProcess::ClassIndex { offset: -1 },
    performance_sample_count: IMAGENET_PERF_SAMPLES,
};

const PROFILES: &[Profile] = &[
    RESNET50_ONNXRUNTIME,
    // ResNet50 quantized by MERA's quantizer for Edgecortix DNA (int8 weights, uint8
    // activations inside): its ONNX flow keeps the model's float32 NCHW input, so the MLPerf
    // preprocessing is resnet50-onnxruntime's; the server's config names the outputs
    // (`[dna] outputs = ["ArgMax:0", "softmax_tensor:0"]`), which the graph does not keep.
    Profile {
        name: "resnet50-dna",
        model: "resnet50-dna",
        ..RESNET50_ONNXRUNTIME
    },
    Profile {
        name: "mobilenet-onnxruntime",
        model: "mobilenet",
        mlperf_model: "mobilenet",
        dataset: "imagenet",
        input: "input:0",
        outputs: &["MobilenetV1/Predictions/Reshape_1:0"],
        height: 224,
        width: 224,
        color: ColorOrder::Rgb,
        layout: Layout::Nchw,
        resize: Resize::ShortSideThenCenterCrop { short_side: 256 },
        mean: SYMMETRIC.0,
        std: SYMMETRIC.1,
        input_type: InputType::F32,
        post_process: PostProcess::ArgMax { offset: -1 },
        performance_sample_count: IMAGENET_PERF_SAMPLES,
    },
    Profile {
        name: "mobilenet_coral",
        model: "mobilenet_coral",
        mlperf_model: "mobilenet",
        dataset: "imagenet",
        input: "input",
        // MobileNet v1 and v2 Edge TPU models name their one output differently: read whichever.
        outputs: &[],
        height: 224,
        width: 224,
        color: ColorOrder::Rgb,
        layout: Layout::Nhwc,
        resize: Resize::ShortSideThenCenterCrop { short_side: 256 },
        // The models see (pixel - 128) / 128, quantised with the scale and zero point the server
        // reports (these defaults, 1/128 and 128, are the Coral models': the bytes sent are the
        // pixels themselves).
        mean: [128.0; 3],
        std: [128.0; 3],
        input_type: InputType::U8 {
            scale: 1.0 / 128.0,
            zero_point: 128,
        },
        post_process: PostProcess::ArgMax { offset: -1 },
        performance_sample_count: IMAGENET_PERF_SAMPLES,
    },
    Profile {
        name: "mobilenet_ncs2",
        model: "mobilenet_ncs2",
        mlperf_model: "mobilenet",
        dataset: "imagenet",
        input: "input",
        outputs: &["MobilenetV1/Predictions/Softmax"],
        height: 224,
        width: 224,
        color: ColorOrder::Rgb,
        layout: Layout::Nchw,
        resize: Resize::ShortSideThenCenterCrop { short_side: 256 },
        mean: SYMMETRIC.0,
        std: SYMMETRIC.1,
        input_type: InputType::F16,
        post_process: PostProcess::ArgMax { offset: -1 },
        performance_sample_count: IMAGENET_PERF_SAMPLES,
    },
    Profile {
        name: "efficientnet-lite0-onnxruntime",
        model: "efficientnet-lite0",
        // The ImageNet classification benchmark whose rules and conf keys apply.
        mlperf_model: "resnet50",
        dataset: "imagenet",
        input: "input",
        outputs: &["logits"],
        height: 224,
        width: 224,
        color: ColorOrder::Rgb,
        layout: Layout::Nchw,
        resize: Resize::ShortSideThenCenterCrop { short_side: 256 },
        mean: [127.0; 3],
        std: [128.0; 3],
        input_type: InputType::F32,
        post_process: PostProcess::ArgMax { offset: 0 },
        performance_sample_count: IMAGENET_PERF_SAMPLES,
    },
    Profile {
        name: "ssd-mobilenet-onnxruntime",
        model: "ssd-mobilenet",
        mlperf_model: "ssd-mobilenet",
        dataset: "coco",
        input: "image_tensor:0",
        outputs: &[
            "num_detections:0",
            "detection_boxes:0",
            "detection_scores:0",
            "detection_classes:0",
        ],
        height: 300,
        width: 300,
        color: ColorOrder::Rgb,
        layout: Layout::Nhwc,
        resize: Resize::Stretch,
        mean: [0.0; 3],
        std: [1.0; 3],
        input_type: InputType::U8 {
            scale: 1.0,
            zero_point: 0,
        },
        post_process: PostProcess::Detections,
        performance_sample_count: COCO_PERF_SAMPLES,
    },
    Profile {
        name: "digits-cnn",
        model: "digits-cnn",
        // The ImageNet classification benchmark whose rules and conf keys apply.
        mlperf_model: "resnet50",
        dataset: "imagenet",
        input: "input",
        outputs: &["logits"],
        height: 8,
        width: 8,
        color: ColorOrder::Gray,
        layout: Layout::Nchw,
        resize: Resize::Stretch,
        mean: [0.0; 3],
        std: [255.0; 3],
        input_type: InputType::F32,
        post_process: PostProcess::ArgMax { offset: 0 },
        performance_sample_count: IMAGENET_PERF_SAMPLES,
    },
];

/// Names of all known profiles.
pub fn names() -> Vec<&'static str> {
    PROFILES.iter().map(|p| p.name).collect()
}

/// Looks a profile up by name.
pub fn lookup(name: &str) -> Result<&'static Profile, UnknownProfile> {
    PROFILES
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| UnknownProfile(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_every_profile_and_rejects_unknown_names() {
        for name in names() {
            assert_eq!(lookup(name).unwrap().name, name);
        }
        let err = lookup("resnet51").unwrap_err().to_string();
        assert!(
            err.contains("resnet51") && err.contains("resnet50-onnxruntime"),
            "{err}"
        );
    }

    #[test]
    fn shapes_follow_layout_and_type() {
        let coral = lookup("mobilenet_coral").unwrap();
        assert_eq!(coral.sample_shape(), [224, 224, 3]);
        assert_eq!(coral.sample_bytes(), 224 * 224 * 3);
        assert_eq!(coral.input_type.data_type(), DataType::Uint8);
        let ncs2 = lookup("mobilenet_ncs2").unwrap();
        assert_eq!(ncs2.sample_shape(), [3, 224, 224]);
        assert_eq!(ncs2.sample_bytes(), 224 * 224 * 3 * 2);
        let eff = lookup("efficientnet-lite0-onnxruntime").unwrap();
        assert_eq!((eff.input, eff.outputs), ("input", &["logits"][..]));
        assert_eq!(lookup("digits-cnn").unwrap().sample_shape(), [1, 8, 8]);
        let dna = lookup("resnet50-dna").unwrap();
        assert_eq!(
            (dna.model, dna.sample_shape()),
            ("resnet50-dna", [3, 224, 224])
        );
    }

    #[test]
    fn profile_names_are_unique() {
        let mut all = names();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), PROFILES.len());
    }
}
