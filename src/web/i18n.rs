//! The pages' two languages. Every text a page shows is a field of
//! [`Texts`], so a page cannot show a text one language lacks.

/// A page's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lang {
    Zh,
    En,
}

impl Lang {
    pub fn parse(s: &str) -> Option<Lang> {
        let s = s.trim().to_ascii_lowercase();
        if s == "zh" || s.starts_with("zh-") || s.starts_with("zh_") {
            Some(Lang::Zh)
        } else if s == "en" || s.starts_with("en-") || s.starts_with("en_") {
            Some(Lang::En)
        } else {
            None
        }
    }

    /// The first language of an `Accept-Language` header faka speaks, by
    /// the client's weights (ties in the client's order).
    pub fn from_accept(header: &str) -> Option<Lang> {
        let mut best: Option<(f32, Lang)> = None;
        for part in header.split(',') {
            let mut pieces = part.split(';');
            let tag = pieces.next().unwrap_or("");
            let q = pieces
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            if let Some(lang) = Lang::parse(tag) {
                if q > 0.0 && best.is_none_or(|(b, _)| q > b) {
                    best = Some((q, lang));
                }
            }
        }
        best.map(|(_, l)| l)
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::Zh => "zh-CN",
            Lang::En => "en",
        }
    }

    pub fn other(self) -> Lang {
        match self {
            Lang::Zh => Lang::En,
            Lang::En => Lang::Zh,
        }
    }

    /// The name of this language, in itself (for the switch).
    pub fn own_name(self) -> &'static str {
        match self {
            Lang::Zh => "中文",
            Lang::En => "English",
        }
    }

    pub fn texts(self) -> &'static Texts {
        match self {
            Lang::Zh => &ZH,
            Lang::En => &EN,
        }
    }
}

pub struct Texts {
    pub all: &'static str,
    pub in_stock: &'static str,
    pub sold_out: &'static str,
    pub no_products: &'static str,
    pub quantity: &'static str,
    pub email: &'static str,
    pub email_hint: &'static str,
    pub query_password: &'static str,
    pub query_password_hint: &'static str,
    pub pay_with: &'static str,
    pub buy: &'static str,
    pub no_gateway: &'static str,
    pub order: &'static str,
    pub status: &'static str,
    pub amount: &'static str,
    pub created: &'static str,
    pub expires: &'static str,
    pub pay_now: &'static str,
    pub keep_page: &'static str,
    pub your_keys: &'static str,
    pub copy: &'static str,
    pub copied: &'static str,
    pub instructions: &'static str,
    pub pending_help: &'static str,
    pub paid_help: &'static str,
    pub awaiting_help: &'static str,
    pub expired_help: &'static str,
    pub refunded_help: &'static str,
    pub not_found: &'static str,
    pub not_found_help: &'static str,
    pub back_home: &'static str,
    pub refused: &'static str,
    pub refused_help: &'static str,
    pub error: &'static str,
    pub per_key: &'static str,
    pub status_pending: &'static str,
    pub status_paid: &'static str,
    pub status_delivered: &'static str,
    pub status_expired: &'static str,
    pub status_awaiting_stock: &'static str,
    pub status_refunded: &'static str,
    pub gateway_manual: &'static str,
    pub gateway_online: &'static str,
    pub gateway_epay: &'static str,
    pub lookup_link: &'static str,
    pub lookup_title: &'static str,
    pub lookup_help: &'static str,
    pub lookup_password: &'static str,
    pub lookup_button: &'static str,
    pub lookup_none: &'static str,
    pub resend_button: &'static str,
    pub resend_help: &'static str,
    pub resend_done: &'static str,
    pub wholesale: &'static str,
    pub from_quantity: &'static str,
    pub coupon: &'static str,
    pub coupon_hint: &'static str,
    pub to_pay: &'static str,
    pub unit_price: &'static str,
    pub subtotal: &'static str,
    pub discount: &'static str,
    pub gateway_alipay: &'static str,
    /// epay's channels by their pay type; others show their name.
    pub pay_type_alipay: &'static str,
    pub pay_type_wxpay: &'static str,
    pub pay_type_qqpay: &'static str,
    /// After an epay channel's name.
    pub via_epay: &'static str,
    pub gateway_wechat: &'static str,
    pub gateway_stripe: &'static str,
    /// Under the WeChat Pay QR code.
    pub scan_to_pay: &'static str,
}

impl Texts {
    pub fn status(&self, status: &str) -> &'static str {
        match status {
            "pending" => self.status_pending,
            "paid" => self.status_paid,
            "delivered" => self.status_delivered,
            "expired" => self.status_expired,
            "awaiting_stock" => self.status_awaiting_stock,
            _ => self.status_refunded,
        }
    }
}

static ZH: Texts = Texts {
    all: "全部",
    in_stock: "库存",
    sold_out: "已售罄",
    no_products: "暂无商品。",
    quantity: "数量",
    email: "邮箱",
    email_hint: "用于查询订单与接收卡密",
    query_password: "查询密码（可选）",
    query_password_hint: "以后可凭邮箱和此密码找回订单",
    pay_with: "支付方式",
    buy: "立即购买",
    no_gateway: "商家尚未开通支付方式。",
    order: "订单",
    status: "状态",
    amount: "金额",
    created: "下单时间",
    expires: "支付截止",
    pay_now: "去支付",
    keep_page: "请收藏本页：它是查看卡密的唯一入口。",
    your_keys: "您的卡密",
    copy: "复制",
    copied: "已复制",
    instructions: "使用说明",
    pending_help: "等待付款。付款后本页会自动更新。",
    paid_help: "已付款，正在发货……",
    awaiting_help:
        "已收到您的付款，但库存暂时不足。商家补货后会自动按顺序发货，本页会显示卡密，无需重新下单。",
    expired_help:
        "订单已过期，预留的库存已释放。若您已付款，付款仍会被处理并自动发货；若未付款，请重新下单。",
    refunded_help: "订单已退款。",
    not_found: "页面不存在",
    not_found_help: "找不到这个商品或订单。订单链接需要带上完整的 token。",
    back_home: "返回首页",
    refused: "请求被拒绝",
    refused_help: "表单已过期或来源不明。请返回上一页刷新后重试。",
    error: "出错了",
    per_key: "每件",
    status_pending: "待支付",
    status_paid: "已支付",
    status_delivered: "已发货",
    status_expired: "已过期",
    status_awaiting_stock: "等待补货",
    status_refunded: "已退款",
    gateway_manual: "人工转账（商家确认）",
    gateway_online: "在线支付",
    gateway_epay: "支付宝 / 微信（易支付）",
    lookup_link: "查询订单",
    lookup_title: "查询订单",
    lookup_help: "输入下单时填写的邮箱和查询密码，找回您的订单和卡密。",
    lookup_password: "查询密码",
    lookup_button: "查询",
    lookup_none: "没有找到订单。请检查邮箱和查询密码（未设置查询密码的订单无法查询）。",
    resend_button: "重新发送邮件",
    resend_help: "输入下单邮箱，我们会把发货邮件再发送一次。",
    resend_done: "如果邮箱与订单一致且订单已发货，邮件已在发送途中（每个订单每小时最多 3 次）。",
    wholesale: "批发价",
    from_quantity: "件起",
    coupon: "优惠码（可选）",
    coupon_hint: "提交订单时核验并计入价格",
    to_pay: "应付",
    unit_price: "单价",
    subtotal: "小计",
    discount: "优惠",
    gateway_alipay: "支付宝",
    pay_type_alipay: "支付宝",
    pay_type_wxpay: "微信支付",
    pay_type_qqpay: "QQ 钱包",
    via_epay: "（易支付）",
    gateway_wechat: "微信支付",
    gateway_stripe: "银行卡（Stripe）",
    scan_to_pay: "请用微信扫描二维码付款，付款后本页自动更新。",
};

static EN: Texts = Texts {
    all: "All",
    in_stock: "In stock",
    sold_out: "Sold out",
    no_products: "Nothing for sale yet.",
    quantity: "Quantity",
    email: "E-mail",
    email_hint: "To find your order and receive your keys",
    query_password: "Lookup password (optional)",
    query_password_hint: "Find your orders later with your e-mail and this password",
    pay_with: "Pay with",
    buy: "Buy now",
    no_gateway: "The shop has no payment method enabled yet.",
    order: "Order",
    status: "Status",
    amount: "Amount",
    created: "Created",
    expires: "Pay before",
    pay_now: "Pay now",
    keep_page: "Bookmark this page: it is where your keys are.",
    your_keys: "Your keys",
    copy: "Copy",
    copied: "Copied",
    instructions: "How to use",
    pending_help: "Waiting for your payment. This page updates by itself once you have paid.",
    paid_help: "Paid; delivering…",
    awaiting_help: "Your payment arrived but the product is out of stock. Your keys are delivered automatically, first come first served, as soon as the shop restocks; they will appear here. No need to order again.",
    expired_help: "This order expired and its keys went back on sale. If you did pay, the payment is still honoured and delivered; if not, please place a new order.",
    refunded_help: "This order was refunded.",
    not_found: "Not found",
    not_found_help: "No such product or order. An order link needs its full token.",
    back_home: "Back to the shop",
    refused: "Request refused",
    refused_help: "The form was stale or came from elsewhere. Go back, reload the page and try again.",
    error: "Something went wrong",
    per_key: "each",
    status_pending: "Awaiting payment",
    status_paid: "Paid",
    status_delivered: "Delivered",
    status_expired: "Expired",
    status_awaiting_stock: "Awaiting stock",
    status_refunded: "Refunded",
    gateway_manual: "Bank transfer (confirmed by the shop)",
    gateway_online: "Online payment",
    gateway_epay: "Alipay / WeChat (epay)",
    lookup_link: "Find my orders",
    lookup_title: "Find your orders",
    lookup_help: "Enter the e-mail and query password you ordered with to see your orders and keys again.",
    lookup_password: "Query password",
    lookup_button: "Find",
    lookup_none: "No orders found. Check the e-mail and query password (orders placed without a query password cannot be found).",
    resend_button: "Send the e-mail again",
    resend_help: "Enter the e-mail you ordered with and the delivery e-mail is sent again.",
    resend_done: "If the e-mail is the order's and the order is delivered, the e-mail is on its way (at most 3 times per order per hour).",
    wholesale: "Wholesale",
    from_quantity: "or more",
    coupon: "Coupon (optional)",
    coupon_hint: "Checked and priced in when you order",
    to_pay: "To pay",
    unit_price: "Unit price",
    subtotal: "Subtotal",
    discount: "Discount",
    gateway_alipay: "Alipay",
    pay_type_alipay: "Alipay",
    pay_type_wxpay: "WeChat Pay",
    pay_type_qqpay: "QQ Wallet",
    via_epay: " (epay)",
    gateway_wechat: "WeChat Pay",
    gateway_stripe: "Card (Stripe)",
    scan_to_pay: "Scan the QR code with WeChat to pay; this page updates by itself once paid.",
};

#[cfg(test)]
mod tests {
    use super::Lang;

    #[test]
    fn accept_language_picks_the_heaviest_language_faka_speaks() {
        assert_eq!(Lang::from_accept("en-US,en;q=0.9"), Some(Lang::En));
        assert_eq!(
            Lang::from_accept("fr, zh-CN;q=0.8, en;q=0.5"),
            Some(Lang::Zh)
        );
        assert_eq!(Lang::from_accept("en;q=0.2, zh-TW;q=0.7"), Some(Lang::Zh));
        assert_eq!(Lang::from_accept("de, fr"), None);
        assert_eq!(Lang::from_accept("zh;q=0"), None);
        assert_eq!(Lang::from_accept(""), None);
    }
}
