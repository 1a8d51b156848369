//! The derives in the places users put them, each in a module of its own: generic structs with
//! `where` clauses, optional and nested keys, renames, dynamic rests, keys without tensors, a
//! generic nucleotide under its own name, and a module that shadows the prelude (the derives
//! name everything by absolute path, so shadowing cannot break them).
#![allow(dead_code, non_camel_case_types)]

mod generics {
    use burn::prelude::Backend;
    use burn::tensor::{Bool, Int, Tensor};
    use nc7_core::{Generated, Incoming, Nest};

    #[derive(Generated)]
    pub struct Pyramid<B: Backend> {
        pub low: Tensor<B, 4>,
        pub high: Option<Tensor<B, 4>>,
    }

    #[derive(Incoming)]
    pub struct In<B: Backend> {
        /// Images.
        pub images: Tensor<B, 4>,
        pub mask: Option<Tensor<B, 4, Bool>>,
        #[nc7(rename = "class-ids")]
        pub labels: Tensor<B, 1, Int>,
        pub rest: Nest<B>,
    }

    #[derive(Generated)]
    pub struct Out<B>
    where
        B: Backend,
    {
        pub logits: Tensor<B, 2>,
        pub features: Pyramid<B>,
        pub names: Vec<String>,
    }

    #[test]
    fn generics_options_nests_and_renames_derive() {
        type B = burn::backend::NdArray;
        let keys: std::vec::Vec<_> = <In<B> as nc7_core::Keys<B>>::KEYS
            .iter()
            .map(|k| &*k.name)
            .collect();
        assert_eq!(keys, ["images", "mask", "class-ids", "rest"]);
    }
}

mod no_backend {
    use nc7_core::{Incoming, Keys};

    /// Keys that hold no tensors need no backend parameter.
    #[derive(Incoming)]
    struct Settings {
        threshold: f64,
        count: Option<i64>,
        flag: bool,
    }

    #[test]
    fn keys_without_tensors_need_no_backend() {
        assert_eq!(<Settings as Keys<burn::backend::NdArray>>::KEYS.len(), 3);
    }
}

mod generic_nucleotide {
    use std::marker::PhantomData;

    use burn::prelude::Backend;
    use burn::tensor::Tensor;
    use nc7_core::nucleotide::ModelPlugin;
    use nc7_core::{BoxError, Build, Generated, Incoming, Mode, Nucleotide, nucleotide};

    /// Doubles its input.
    #[nucleotide(kind = ModelPlugin, name = "Twice")]
    #[derive(burn::module::Module, Debug)]
    pub struct Double<B: Backend> {
        _b: PhantomData<B>,
    }

    #[derive(Incoming)]
    pub struct In<B: Backend> {
        x: Tensor<B, 1>,
    }

    #[derive(Generated)]
    pub struct Out<B: Backend> {
        y: Tensor<B, 1>,
    }

    #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, Default)]
    pub struct Config {}

    impl<B: Backend> Build<B> for Double<B> {
        type Config = Config;
        type Input = In<B>;
        type Output = Out<B>;
        fn build(_: &Config, _: &B::Device) -> Result<Self, BoxError> {
            Ok(Double { _b: PhantomData })
        }
    }

    impl<B: Backend> ModelPlugin<B> for Double<B> {
        fn forward(&self, input: In<B>, _: Mode) -> Out<B> {
            Out { y: input.x * 2.0 }
        }
    }

    #[test]
    fn a_generic_nucleotide_takes_its_given_name() {
        assert_eq!(
            <Double<burn::backend::NdArray> as Nucleotide>::CLASS_NAME,
            "Twice"
        );
    }
}

mod shadowed_prelude {
    use burn::backend::NdArray;
    use burn::prelude::Backend;
    use burn::tensor::Tensor;
    use nc7_core::glue::At;
    use nc7_core::nucleotide::ModelLoss;
    use nc7_core::{BoxError, Build, Generated, Incoming, Keys, Mode, nucleotide};

    struct Option;
    struct Some;
    struct None;
    struct Result;
    struct Ok;
    struct Err;
    struct Vec;
    struct String;
    struct Box;

    #[derive(Incoming)]
    struct In<B: Backend> {
        x: Tensor<B, 2>,
        maybe: core::option::Option<Tensor<B, 2>>,
        label: std::string::String,
    }

    #[derive(Generated)]
    struct Out<B: Backend> {
        y: Tensor<B, 2>,
        all: std::vec::Vec<f64>,
    }

    /// A nucleotide declared under the shadowed prelude.
    // A loss, not a plugin: plugins derive burn's `Module`, whose derive is not hygienic itself.
    #[nucleotide(kind = ModelLoss)]
    struct Shadowed;

    #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
    struct Config {}

    impl<B: Backend> Build<B> for Shadowed {
        type Config = Config;
        type Input = In<B>;
        type Output = Out<B>;
        fn build(_: &Config, _: &B::Device) -> core::result::Result<Self, BoxError> {
            core::result::Result::Ok(Shadowed)
        }
    }

    impl<B: Backend> ModelLoss<B> for Shadowed {
        fn loss(&self, input: In<B>, _: Mode) -> Out<B> {
            Out {
                y: input.x,
                all: std::vec::Vec::new(),
            }
        }
    }

    #[test]
    fn derives_survive_a_shadowed_prelude() {
        let device = Default::default();
        let out = Out::<NdArray> {
            y: Tensor::zeros([1, 1], &device),
            all: std::vec![1.0],
        };
        let n = out.into_nest();
        let back = Out::<NdArray>::from_nest(n, &At::nucleotide("h"));
        assert!(back.is_ok());
        assert_eq!(<In<NdArray> as Keys<NdArray>>::KEYS.len(), 3);
        assert!(
            nc7_core::Registry::global()
                .resolve("Shadowed", core::option::Option::None)
                .is_ok()
        );
    }
}
