//! A shipment for one order. Stream `shipment-<order uuid>`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::order::ShippingAddress;
use crate::wire::event_names;
use crate::{Aggregate, DomainError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ShipmentEvent {
    ShipmentCreated {
        order_id: Uuid,
        tracking_number: String,
        address: ShippingAddress,
    },
    ShipmentCancelled {
        order_id: Uuid,
    },
}
event_names!(ShipmentEvent {
    ShipmentCreated,
    ShipmentCancelled
});

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShipmentCommand {
    /// Creates the shipment if the country is served; repeating it changes
    /// nothing.
    Create {
        order_id: Uuid,
        address: ShippingAddress,
        /// ISO 3166-1 alpha-2 codes served (`SHIPPING_COUNTRIES`).
        served_countries: Vec<String>,
        tracking_number: String,
    },
    /// Cancels the shipment; nothing if there is none or it is cancelled.
    Cancel,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipment {
    pub exists: bool,
    pub order_id: Uuid,
    pub tracking_number: String,
    pub cancelled: bool,
}

impl Aggregate for Shipment {
    const SNAPSHOT_TYPE: &'static str = "shipment";
    type State = Shipment;
    type Command = ShipmentCommand;
    type Event = ShipmentEvent;

    fn decide(
        state: &Shipment,
        command: ShipmentCommand,
    ) -> Result<Vec<ShipmentEvent>, DomainError> {
        match command {
            ShipmentCommand::Create {
                order_id,
                address,
                served_countries,
                tracking_number,
            } => {
                if state.exists {
                    return Ok(vec![]);
                }
                if !served_countries
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(&address.country))
                {
                    return Err(DomainError::ShippingUnavailable {
                        country: address.country,
                    });
                }
                Ok(vec![ShipmentEvent::ShipmentCreated {
                    order_id,
                    tracking_number,
                    address,
                }])
            }
            ShipmentCommand::Cancel => Ok(if state.exists && !state.cancelled {
                vec![ShipmentEvent::ShipmentCancelled {
                    order_id: state.order_id,
                }]
            } else {
                vec![]
            }),
        }
    }

    fn evolve(mut state: Shipment, event: &ShipmentEvent) -> Shipment {
        match event {
            ShipmentEvent::ShipmentCreated {
                order_id,
                tracking_number,
                ..
            } => {
                state.exists = true;
                state.order_id = *order_id;
                state.tracking_number = tracking_number.clone();
            }
            ShipmentEvent::ShipmentCancelled { .. } => state.cancelled = true,
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::given::given;

    const ORDER: Uuid = Uuid::from_u128(3);

    fn address(country: &str) -> ShippingAddress {
        ShippingAddress {
            name: "Ada".into(),
            line1: "1 Analytical Way".into(),
            city: "London".into(),
            postal_code: "N1".into(),
            country: country.into(),
        }
    }

    fn create(country: &str) -> ShipmentCommand {
        ShipmentCommand::Create {
            order_id: ORDER,
            address: address(country),
            served_countries: vec!["US".into(), "GB".into()],
            tracking_number: "TRK-1".into(),
        }
    }

    fn created() -> ShipmentEvent {
        ShipmentEvent::ShipmentCreated {
            order_id: ORDER,
            tracking_number: "TRK-1".into(),
            address: address("GB"),
        }
    }

    #[test]
    fn a_shipment_to_a_served_country_is_created() {
        given::<Shipment>([]).when(create("GB")).then([created()]);
    }

    #[test]
    fn shipping_is_unavailable_outside_the_served_countries() {
        given::<Shipment>([])
            .when(create("BR"))
            .then_error(DomainError::ShippingUnavailable {
                country: "BR".into(),
            });
    }

    #[test]
    fn creating_it_again_changes_nothing() {
        given::<Shipment>([created()])
            .when(create("GB"))
            .then_nothing();
    }

    #[test]
    fn a_shipment_is_cancelled_once() {
        let cancelled = ShipmentEvent::ShipmentCancelled { order_id: ORDER };
        given::<Shipment>([created()])
            .when(ShipmentCommand::Cancel)
            .then([cancelled.clone()]);
        given::<Shipment>([created(), cancelled])
            .when(ShipmentCommand::Cancel)
            .then_nothing();
        given::<Shipment>([])
            .when(ShipmentCommand::Cancel)
            .then_nothing();
    }
}
