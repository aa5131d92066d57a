//! Image → input tensor bytes, as a profile describes: decode, resize, centre crop, normalise,
//! lay out and convert to the wire element type. Runs before timing, never on the issue path.

use std::path::Path;

use half::f16;
use image::imageops::{self, FilterType};
use image::DynamicImage;

use super::DatasetError;
use crate::profile::{ColorOrder, InputType, Layout, Profile, Resize};

/// Decodes the image file at `path` and preprocesses it for `profile`.
pub fn load_image(path: &Path, profile: &Profile) -> Result<Vec<u8>, DatasetError> {
    let image = image::ImageReader::open(path)
        .map_err(|source| DatasetError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .with_guessed_format()
        .map_err(|source| DatasetError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .decode()
        .map_err(|source| DatasetError::Decode {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(preprocess(&image, profile))
}

/// Brings a decoded image to the profile's size and converts it to tensor bytes.
pub fn preprocess(image: &DynamicImage, profile: &Profile) -> Vec<u8> {
    let (w, h) = (profile.width, profile.height);
    let pixels = match profile.color {
        ColorOrder::Gray => {
            let gray = image.to_luma8();
            resize_and_crop(&gray, w, h, profile.resize).into_raw()
        }
        ColorOrder::Rgb | ColorOrder::Bgr => {
            let rgb = image.to_rgb8();
            resize_and_crop(&rgb, w, h, profile.resize).into_raw()
        }
    };
    encode_pixels(&pixels, profile)
}

fn resize_and_crop<P>(
    image: &image::ImageBuffer<P, Vec<u8>>,
    out_w: u32,
    out_h: u32,
    resize: Resize,
) -> image::ImageBuffer<P, Vec<u8>>
where
    P: image::Pixel<Subpixel = u8> + 'static,
{
    let (w, h) = image.dimensions();
    let (scaled_w, scaled_h) = match resize {
        Resize::Stretch => (out_w, out_h),
        Resize::ShortSideThenCenterCrop { short_side } => {
            let scale = f64::from(short_side) / f64::from(w.min(h));
            let sw = ((f64::from(w) * scale).round() as u32).max(short_side);
            let sh = ((f64::from(h) * scale).round() as u32).max(short_side);
            (sw.max(out_w), sh.max(out_h))
        }
    };
    let scaled = if (scaled_w, scaled_h) == (w, h) {
        image.clone()
    } else {
        imageops::resize(image, scaled_w, scaled_h, FilterType::Triangle)
    };
    if (scaled_w, scaled_h) == (out_w, out_h) {
        return scaled;
    }
    let (left, top) = ((scaled_w - out_w) / 2, (scaled_h - out_h) / 2);
    imageops::crop_imm(&scaled, left, top, out_w, out_h).to_image()
}

/// Converts row-major HWC 8-bit pixels (RGB or gray, `profile.height × profile.width`) into the
/// profile's tensor: channel order, `(x - mean) / std`, layout and element type.
pub fn encode_pixels(pixels: &[u8], profile: &Profile) -> Vec<u8> {
    let channels = profile.color.channels();
    let plane = profile.height as usize * profile.width as usize;
    let mut values = vec![0f32; plane * channels];
    for (p, pixel) in pixels.chunks_exact(channels).enumerate() {
        for c in 0..channels {
            let source = match profile.color {
                ColorOrder::Bgr => channels - 1 - c,
                ColorOrder::Rgb | ColorOrder::Gray => c,
            };
            let v = (f32::from(pixel[source]) - profile.mean[c]) / profile.std[c];
            let at = match profile.layout {
                Layout::Nchw => c * plane + p,
                Layout::Nhwc => p * channels + c,
            };
            values[at] = v;
        }
    }
    to_bytes(&values, profile.input_type)
}

fn to_bytes(values: &[f32], input_type: InputType) -> Vec<u8> {
    match input_type {
        InputType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        InputType::F16 => values
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect(),
        InputType::U8 { scale, zero_point } => values
            .iter()
            .map(|v| quantise(*v, scale, zero_point, 0.0, 255.0) as u8)
            .collect(),
        InputType::I8 { scale, zero_point } => values
            .iter()
            .map(|v| (quantise(*v, scale, zero_point, -128.0, 127.0) as i8).to_le_bytes()[0])
            .collect(),
    }
}

fn quantise(v: f32, scale: f32, zero_point: i32, lo: f32, hi: f32) -> f32 {
    ((v / scale).round() + zero_point as f32).clamp(lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{lookup, PostProcess};
    use image::{Rgb, RgbImage};

    fn tiny(layout: Layout, color: ColorOrder, input_type: InputType) -> Profile {
        Profile {
            name: "test",
            model: "m",
            mlperf_model: "resnet50",
            dataset: "imagenet",
            input: "x",
            outputs: &["y"],
            height: 2,
            width: 2,
            color,
            layout,
            resize: Resize::ShortSideThenCenterCrop { short_side: 2 },
            mean: [10.0, 20.0, 30.0],
            std: [2.0, 4.0, 5.0],
            input_type,
            post_process: PostProcess::ArgMax { offset: 0 },
            performance_sample_count: 4,
        }
    }

    fn f32s(bytes: &[u8]) -> Vec<f32> {
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    /// A 4x2 image whose centre 2x2 pixels are distinct; the outer columns must be cropped away.
    fn png_file(dir: &Path) -> std::path::PathBuf {
        let mut img = RgbImage::from_pixel(4, 2, Rgb([255, 255, 255]));
        img.put_pixel(1, 0, Rgb([12, 24, 35]));
        img.put_pixel(2, 0, Rgb([14, 28, 40]));
        img.put_pixel(1, 1, Rgb([16, 32, 45]));
        img.put_pixel(2, 1, Rgb([18, 36, 50]));
        let path = dir.join("tiny.png");
        img.save(&path).unwrap();
        path
    }

    #[test]
    fn png_is_cropped_normalised_and_laid_out_nchw() {
        let dir = tempfile::tempdir().unwrap();
        let path = png_file(dir.path());
        let profile = tiny(Layout::Nchw, ColorOrder::Rgb, InputType::F32);
        let got = f32s(&load_image(&path, &profile).unwrap());
        // R plane, G plane, B plane; each (x - mean) / std.
        assert_eq!(
            got,
            vec![1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0]
        );
    }

    #[test]
    fn nhwc_bgr_and_quantised_types() {
        let dir = tempfile::tempdir().unwrap();
        let path = png_file(dir.path());
        let bgr = tiny(Layout::Nhwc, ColorOrder::Bgr, InputType::F32);
        let got = f32s(&load_image(&path, &bgr).unwrap());
        // Pixel (1,0) = RGB(12,24,35): BGR order with channel-order mean/std → (35-10)/2, (24-20)/4, (12-30)/5.
        assert_eq!(&got[..3], &[12.5, 1.0, -3.6]);

        let u8_profile = tiny(
            Layout::Nhwc,
            ColorOrder::Rgb,
            InputType::U8 {
                scale: 0.5,
                zero_point: 3,
            },
        );
        let got = load_image(&path, &u8_profile).unwrap();
        assert_eq!(&got[..3], &[5, 5, 5]);
        let i8_profile = tiny(
            Layout::Nchw,
            ColorOrder::Rgb,
            InputType::I8 {
                scale: 0.01,
                zero_point: 0,
            },
        );
        let got = load_image(&path, &i8_profile).unwrap();
        assert_eq!(got[0] as i8, 100);
        assert_eq!(got[3] as i8, 127, "saturates at the type's maximum");

        let half = tiny(Layout::Nchw, ColorOrder::Rgb, InputType::F16);
        let got = load_image(&path, &half).unwrap();
        assert_eq!(f16::from_le_bytes([got[2], got[3]]).to_f32(), 2.0);
    }

    #[test]
    fn short_side_resize_then_centre_crop_gives_model_size() {
        let profile = lookup("efficientnet-lite0-onnxruntime").unwrap();
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(640, 480, Rgb([127, 255, 0])));
        let got = f32s(&preprocess(&img, profile));
        assert_eq!(got.len(), 3 * 224 * 224);
        assert_eq!(got[0], 0.0);
        assert_eq!(got[224 * 224], 1.0);
        assert_eq!(got[2 * 224 * 224], -127.0 / 128.0);
    }

    #[test]
    fn gray_profile_reads_one_channel() {
        let profile = lookup("digits-cnn").unwrap();
        let img = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(8, 8, image::Luma([51])));
        let got = f32s(&preprocess(&img, profile));
        assert_eq!(got.len(), 64);
        assert!(got.iter().all(|v| (*v - 0.2).abs() < 1e-6));
    }

    #[test]
    fn undecodable_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.jpg");
        std::fs::write(&path, b"not an image").unwrap();
        let profile = lookup("digits-cnn").unwrap();
        let err = load_image(&path, profile).unwrap_err().to_string();
        assert!(err.contains("broken.jpg"), "{err}");
    }
}
